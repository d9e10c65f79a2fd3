"""New signatures see recent files: when clamd's signature version changes, the clean
blobs stored within CHATMEDIA_RESCAN_WINDOW are queued for a scan, at most
CHATMEDIA_RESCAN_RATE a second, after every new upload's scan (chatmedia.db.jobs)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import anyio

from chatmedia.db.jobs import Jobs, NewJob
from chatmedia.db.scans import Scans, set_shared_value, shared_value
from chatmedia.scanning.job import RESCAN_PRIORITY, SCAN_JOB
from chatmedia.services import BACKEND_OUTAGES, Services

log = logging.getLogger("chatmedia.scanning")

# The shared fact (chatmedia.db.scans) of the signature version the nodes last acted on.
VERSION_STATE = "scanner.version"
_BATCH = 1000


async def watch_signatures(services: Services, stopping: anyio.Event) -> None:
    """Read clamd's version every CHATMEDIA_RESCAN_CHECK_INTERVAL, and queue rescans when
    it changed, until `stopping` is set."""
    assert services.scanner is not None
    interval = services.settings.rescan_check_interval.total_seconds()
    while not stopping.is_set():
        version = await services.scanner.read_version()
        if version is not None:
            try:
                await rescan_if_changed(services, version)
            except BACKEND_OUTAGES as e:
                log.warning("could not queue rescans (%s); trying again", e)
        with anyio.move_on_after(interval):
            await stopping.wait()


async def rescan_if_changed(services: Services, version: str) -> int:
    """When the nodes have not yet acted on `version`, queue scans of the recent clean
    blobs scanned with other signatures, spread at the rescan rate; how many were queued.
    Nodes that see the change at the same time queue the same jobs, which stay one each;
    a node that stops half-way leaves the rest to the next check."""
    async with services.db.read() as conn:
        seen = await shared_value(conn, VERSION_STATE)
    if seen == version:
        return 0
    settings = services.settings
    now = datetime.now(UTC)
    since = now - settings.rescan_window
    step = timedelta(seconds=1 / settings.rescan_rate)
    queued = 0
    before = None
    while seen is not None:  # the first version seen: nothing was scanned with another
        async with services.db.write() as conn:
            batch = await Scans(conn).recent_clean(since, version, before, _BATCH)
            jobs = [
                NewJob(SCAN_JOB, sha256, now + step * (queued + i), RESCAN_PRIORITY)
                for i, (sha256, _) in enumerate(batch)
            ]
            await Jobs(conn).add(jobs, now)
        queued += len(batch)
        if len(batch) < _BATCH:
            break
        before = batch[-1][1]
    async with services.db.write() as conn:
        await set_shared_value(conn, VERSION_STATE, version, now)
    if queued:
        log.info("new signatures (%s): %d recent files queued for a rescan", version, queued)
        services.bus.notify()
    return queued
