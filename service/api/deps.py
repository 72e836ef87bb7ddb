"""The route dependencies, as `Annotated[..., Depends(...)]` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service import budget as budgets
from service.budget import Budget
from service.engine.engine import Engine
from service.errors import NotReady
from service.outcomes import Outcomes
from service.runtime import Runtime
from service.settings import Settings


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_engine(runtime: RuntimeDep) -> Engine:
    if runtime.engine is None:
        raise NotReady("the replica is not ready yet", retry_after_s=2.0)
    return runtime.engine


def get_outcomes(runtime: RuntimeDep) -> Outcomes:
    assert runtime.outcomes is not None  # made before the port opens
    return runtime.outcomes


def get_budget(request: Request, settings: SettingsDep) -> Budget:
    """The request's latency budget from its headers (400 when a budget header is malformed)."""
    return budgets.parse(request.headers, settings.default_budget_ms, settings.min_budget_ms, settings.max_budget_ms)


EngineDep = Annotated[Engine, Depends(get_engine)]
OutcomesDep = Annotated[Outcomes, Depends(get_outcomes)]
BudgetDep = Annotated[Budget, Depends(get_budget)]
