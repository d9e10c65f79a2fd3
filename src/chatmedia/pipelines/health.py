"""Readiness: whether the backends this node needs answer."""

from __future__ import annotations

import anyio
import sqlalchemy as sa

from chatmedia.errors import BackendUnavailable
from chatmedia.services import BACKEND_OUTAGES, Services

# Seconds each backend has to answer a readiness check.
CHECK_TIMEOUT = 5.0
# A key no blob has (keys are SHA-256 digests of content; this is the digest of nothing
# stored: asking for it reads nothing and writes nothing).
_PROBE_KEY = "0" * 64
_FAILURES: tuple[type[Exception], ...] = (TimeoutError, *BACKEND_OUTAGES)


async def check_ready(services: Services) -> None:
    """Return when the database, the blob store and (when scanning is on) clamd answer;
    raise BackendUnavailable naming the one that does not."""
    try:
        with anyio.fail_after(CHECK_TIMEOUT):
            async with services.db.read() as conn:
                await conn.execute(sa.select(1))
    except _FAILURES as e:
        raise BackendUnavailable("the database does not answer") from e
    try:
        with anyio.fail_after(CHECK_TIMEOUT):
            await services.store.stat(_PROBE_KEY)
    except _FAILURES as e:
        raise BackendUnavailable("the blob store does not answer") from e
    if services.scanner is not None and not await services.scanner.ready():
        raise BackendUnavailable("the scanner (clamd) does not answer")
