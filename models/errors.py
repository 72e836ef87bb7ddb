"""Domain errors raised by the model package.

Every error a caller can provoke with bad input is one of these, so the CLI and the service can
turn it into a clear message (or an HTTP status) instead of a traceback from deep inside torch.
"""


class DynaqaError(Exception):
    """Base class: something the caller asked for cannot be done, and the message says why."""


class InvalidSubnet(DynaqaError, ValueError):
    """A sub-network outside the checkpoint's space (width, depth or lengths)."""


class InvalidInput(DynaqaError, ValueError):
    """A question, context or data file that cannot be processed."""


class CheckpointError(DynaqaError):
    """A checkpoint directory that is missing files, malformed or inconsistent."""
