"""The FastAPI app: `create_app(settings)` wires the runtime's lifespan, the middleware, the
error table and the routes; each lives in a module of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api.auth import Auth, KeyStore
from service.api.errors import HANDLERS
from service.api.middleware import Admission, RequestContext
from service.api.oip import router as oip_router
from service.api.routes import router
from service.api.schemas import ErrorResponse
from service.runtime import Runtime
from service.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="dynaqa",
        version="0.1.0",
        summary="Extractive QA from one dynamic BERT, answered within each request's latency budget.",
        lifespan=lifespan,
        responses={422: {"model": ErrorResponse}},
        exception_handlers=HANDLERS,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.add_middleware(Admission, runtime=runtime)
    app.add_middleware(Auth, keys=KeyStore.from_setting(settings.api_keys), runtime=runtime)  # before the gate
    app.add_middleware(RequestContext)  # added last: outermost, so refusals carry the request id too
    app.include_router(router)
    app.include_router(oip_router)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` with several workers: settings from DYNAQA_* variables."""
    from service import logs

    settings = Settings()
    logs.configure(settings.log_level)
    return create_app(settings)
