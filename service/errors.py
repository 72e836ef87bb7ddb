"""Domain errors of the service, raised low and mapped to HTTP in one table (service/api/errors.py)."""

from __future__ import annotations


class ServiceError(Exception):
    """Base: `status` is the HTTP status, `outcome` the label counted in dynaqa_requests_total."""

    status = 500
    outcome = "error"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidBudget(ServiceError):
    status = 400
    outcome = "rejected"


class BudgetBelowFloor(ServiceError):
    """Strict budget below what the sub-network quickest for the input needs even on an idle server."""

    status = 400
    outcome = "rejected"


class Overloaded(ServiceError):
    """Queue full, or a strict budget that load (not the model) makes impossible."""

    status = 503
    outcome = "shed"


class Expired(ServiceError):
    """The request's deadline passed before the model got to it; dropped before compute."""

    status = 504
    outcome = "expired"


class Draining(ServiceError):
    status = 503
    outcome = "shed"


class NotReady(ServiceError):
    status = 503
    outcome = "shed"


class PayloadTooLarge(ServiceError):
    status = 413
    outcome = "rejected"
