"""The app factory: wiring, lifespan, and the background retention sweeper."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
from fastapi import FastAPI

import chatmedia
from chatmedia.config import Settings, load_settings
from chatmedia.db.migrate import ensure_schema
from chatmedia.http.metrics import Metrics, MetricsMiddleware
from chatmedia.http.responses import install_error_handlers
from chatmedia.http.routes import compat, files, system
from chatmedia.http.security import SecurityHeadersMiddleware
from chatmedia.pipelines.files import sweep_expired
from chatmedia.pipelines.keys import create_first_key
from chatmedia.services import Services, open_services

log = logging.getLogger("chatmedia")

# A staged write older than this was abandoned by a crash.
STALE_STAGING = timedelta(hours=1)
UPLOAD_ROUTES = frozenset({"/v1/files", "/file-engine/api/uploadFileStream"})
DOWNLOAD_ROUTES = frozenset({"/v1/files/{file_id}/content", "/file-engine/api/downloadFileStream"})


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app. Settings are read from the environment when not given."""
    settings = settings or load_settings()
    services = open_services(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await ensure_schema(services.db)
        first_key = await create_first_key(services)
        if first_key:
            _announce_first_key(first_key)
        await services.store.sweep_staging(STALE_STAGING)
        async with anyio.create_task_group() as tasks:
            if settings.retention is not None:
                tasks.start_soon(_retention_loop, services)
            yield
            tasks.cancel_scope.cancel()
        await services.close()

    app = FastAPI(
        title="chatmedia",
        version=chatmedia.__version__,
        summary="Files and media for chat platforms",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.services = services
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(
        MetricsMiddleware, metrics=metrics, uploads=UPLOAD_ROUTES, downloads=DOWNLOAD_ROUTES
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(files.router)
    app.include_router(compat.router)
    app.include_router(system.router)
    return app


def _announce_first_key(secret: str) -> None:
    # Printed, not logged: it goes to the operator's console once, alone on its line.
    print("Created the first API key (shown only this once; keep it):", flush=True)
    print(secret, flush=True)


async def _retention_loop(services: Services) -> None:
    while True:
        try:
            deleted = await sweep_expired(services)
            if deleted:
                log.info("retention: deleted %d expired files", deleted)
        except Exception:
            log.exception("retention sweep failed; trying again next interval")
        await anyio.sleep(services.settings.retention_interval.total_seconds())
