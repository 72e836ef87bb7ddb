"""The route dependencies, as `Annotated[..., Depends(...)]` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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


EngineDep = Annotated[Engine, Depends(get_engine)]
OutcomesDep = Annotated[Outcomes, Depends(get_outcomes)]
