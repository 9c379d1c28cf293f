"""Callback (placeholder until the full service lands)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared.observability import configure_logging, install_operations
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings


def create_app(common: CommonSettings | None = None) -> FastAPI:
    common = common or CommonSettings()
    configure_logging("callback", level=common.log_level, json=common.log_json)
    runtime = ServiceRuntime("callback", common)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        yield
        await runtime.stop()

    app = FastAPI(title="Switchboard callback", lifespan=lifespan)
    install_operations(app, runtime.checks())
    return app
