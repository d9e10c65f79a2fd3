"""The app factory: wiring, lifespan, and the background work (housekeeping and the
webhook dispatcher)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

import chatmedia
from chatmedia.config import Settings, load_settings
from chatmedia.db.listen import listen_for_events
from chatmedia.db.migrate import ensure_schema
from chatmedia.db.secrets import server_secret
from chatmedia.fairuse.quotas import release_lapsed
from chatmedia.http.drain import DrainUnreadBody
from chatmedia.http.idempotency import IdempotencyMiddleware, sweep_idempotency_keys
from chatmedia.http.metrics import Metrics, MetricsMiddleware
from chatmedia.http.openapi import install_openapi
from chatmedia.http.responses import install_error_handlers
from chatmedia.http.routes import (
    admin,
    compat,
    conversations,
    files,
    keys,
    system,
    tenants,
    ui,
    uploads,
    webhooks,
)
from chatmedia.http.security import SecurityHeadersMiddleware
from chatmedia.http.shortcut import Shortcut
from chatmedia.media.job import MEDIA_JOB, media_job
from chatmedia.memory import trim_when_quiet
from chatmedia.pipelines.events import prune_events
from chatmedia.pipelines.files import sweep_expired
from chatmedia.pipelines.keys import create_first_key, record_key_use
from chatmedia.pipelines.webhooks import deliver_forever
from chatmedia.processing.jobs import Handler, run_jobs_forever
from chatmedia.scanning.job import SCAN_JOB, scan_job
from chatmedia.scanning.signatures import watch_signatures
from chatmedia.services import BACKEND_OUTAGES, Services, is_outage, open_services
from chatmedia.uploads.workflow import sweep_expired_uploads

log = logging.getLogger("chatmedia")

# A staged write older than this was abandoned by a crash.
STALE_STAGING = timedelta(hours=1)
# Seconds background work gets to finish at shutdown before it is cancelled.
SHUTDOWN_GRACE = 15
# What pages on the CORS origins may send and read, tus's headers included (a browser's
# tus client, such as the widget's Uppy, on another origin).
CORS_REQUEST_HEADERS = (
    "Authorization", "Content-Type", "Idempotency-Key", "Range", "Tus-Resumable",
    "Upload-Length", "Upload-Offset", "Upload-Metadata", "Upload-Defer-Length",
    "Upload-Checksum",
)  # fmt: skip
CORS_RESPONSE_HEADERS = (
    "Location", "ETag", "Content-Range", "Content-Disposition", "Idempotent-Replayed",
    "Retry-After", "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
    "Tus-Checksum-Algorithm", "Upload-Offset", "Upload-Length", "Upload-Defer-Length",
    "Upload-Expires", "Upload-Metadata",
)  # fmt: skip
# The name, in the database, of the key that signs file links when none is configured.
LINK_SIGNING_SECRET = "file-link-signing"  # noqa: S105 (a name, not a secret)
# How often the last-use times of keys are written (the listing shows them to the minute).
KEY_USE_INTERVAL = 60
UPLOAD_ROUTES = frozenset({"/v1/files", "/file-engine/api/uploadFileStream"})
DOWNLOAD_ROUTES = frozenset({"/v1/files/{file_id}/content", "/file-engine/api/downloadFileStream"})
# POSTs that create things: a retry with the same Idempotency-Key gets the first answer.
IDEMPOTENT_ROUTES = (
    ("POST", "/v1/files"),
    ("POST", "/v1/files/import"),
    ("POST", "/v1/files/external"),
    ("POST", "/file-engine/api/uploadFileStream"),
    ("POST", "/file-engine/api/uploadFileFromUrl"),
    ("POST", r"/v1/conversations/[^/]+/messages"),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app. Settings are read from the environment when not given."""
    settings = settings or load_settings()
    services = open_services(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await ensure_schema(services.db)
        if not services.links.ready:
            services.links.use((await server_secret(services.db, LINK_SIGNING_SECRET),))
        first_key = await create_first_key(services)
        if first_key:
            _announce_first_key(first_key)
        await services.store.sweep_staging(STALE_STAGING)
        stopping = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_housekeeping, services, stopping)
            tasks.start_soon(deliver_forever, services, stopping)
            tasks.start_soon(
                listen_for_events, services.db, services.bus.notify, services.cache, stopping
            )
            tasks.start_soon(_record_key_use, services, stopping)
            tasks.start_soon(trim_when_quiet, lambda: metrics.answered, stopping)
            handlers: dict[str, Handler] = {MEDIA_JOB: media_job}
            if services.scanner is not None:
                await services.scanner.read_version()
                handlers[SCAN_JOB] = scan_job
                tasks.start_soon(watch_signatures, services, stopping)
            tasks.start_soon(run_jobs_forever, services, handlers, stopping)
            yield
            # Let the loops end between transactions rather than cancel them inside one.
            stopping.set()
            services.bus.notify()
            tasks.cancel_scope.deadline = anyio.current_time() + SHUTDOWN_GRACE
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
    install_openapi(app)
    app.include_router(files.router)
    app.include_router(conversations.router)
    app.include_router(webhooks.router)
    app.include_router(keys.router)
    app.include_router(tenants.router)
    app.include_router(uploads.router)
    app.include_router(admin.router)
    app.include_router(compat.router)
    app.include_router(system.router)
    app.include_router(ui.router)
    ui.mount_ui(app, services)
    # Added first, so innermost: the shortcut answers uploads only once the idempotency
    # middleware has seen them; metrics count replays.
    app.add_middleware(Shortcut, services=services)
    app.add_middleware(IdempotencyMiddleware, services=services, routes=IDEMPOTENT_ROUTES)
    app.add_middleware(
        MetricsMiddleware, metrics=metrics, uploads=UPLOAD_ROUTES, downloads=DOWNLOAD_ROUTES
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(DrainUnreadBody)
    if settings.cors_origins:  # outermost: every answer, the shortcuts' too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_RESPONSE_HEADERS),
            max_age=600,
        )
    return app


def _announce_first_key(secret: str) -> None:
    # Printed, not logged: it goes to the operator's console once, alone on its line.
    print("Created the first API key (shown only this once; keep it):", flush=True)
    print(secret, flush=True)


async def _record_key_use(services: Services, stopping: anyio.Event) -> None:
    """Every minute, and at shutdown, write when keys were last used."""
    while True:
        with anyio.move_on_after(KEY_USE_INTERVAL):
            await stopping.wait()
        try:
            await record_key_use(services)
        except BACKEND_OUTAGES as e:
            log.warning("key use not recorded (%s); trying again in a minute", e)
        if stopping.is_set():
            return


async def _housekeeping(services: Services, stopping: anyio.Event) -> None:
    """Every CHATMEDIA_RETENTION_INTERVAL: delete expired files, forget old events and
    idempotency keys past their 24 hours. One node at a time does it; the others skip."""
    while not stopping.is_set():
        try:
            async with services.db.exclusive("housekeeping") as mine:
                if mine:
                    await _sweep(services)
        except Exception as e:
            if is_outage(e):
                log.warning("housekeeping skipped (%s); trying again next interval", e)
            else:
                log.exception("housekeeping failed; trying again next interval")
        with anyio.move_on_after(services.settings.retention_interval.total_seconds()):
            await stopping.wait()


async def _sweep(services: Services) -> None:
    deleted = await sweep_expired(services)
    pruned = await prune_events(services)
    forgotten = await sweep_idempotency_keys(services.db, datetime.now(UTC))
    lapsed = await release_lapsed(services)
    abandoned = await sweep_expired_uploads(services)
    if deleted or pruned or forgotten or lapsed or abandoned:
        log.info(
            "housekeeping: deleted %d expired files, %d old events, %d idempotency keys,"
            " %d expired uploads; released %d lapsed quota reservations",
            deleted, pruned, forgotten, abandoned, lapsed,
        )  # fmt: skip
