"""The media job: describes a stored blob in the sandbox (dimensions, duration,
placeholder, waveform, pages) and stores its previews, once its scan allows; the result
reaches every file of the bytes with `file.updated`."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from chatmedia.db.jobs import Job, Jobs
from chatmedia.db.media import Media
from chatmedia.media.kinds import PREVIEW_SIZES, media_task
from chatmedia.media.sandbox import MediaFailed
from chatmedia.media.store import delete_previews, local_copy, store_preview
from chatmedia.models import MediaState, Preview
from chatmedia.processing.files import changed_files, tell_updated
from chatmedia.processing.jobs import RetryLater
from chatmedia.services import Services

log = logging.getLogger("chatmedia.media")

MEDIA_JOB = "media"
_FIELDS = {"width": "width", "height": "height", "durationMs": "duration_ms",
           "blurhash": "blurhash", "pages": "pages"}  # fmt: skip


async def media_job(services: Services, job: Job) -> None:
    """Describe blob `job.subject` and keep what was found; raises RetryLater while its
    scan is pending or the store does not answer."""
    sha256 = job.subject
    # 1. What the bytes are, and whether they may be decoded yet.
    async with services.db.read() as conn:
        work = await Media(conn).work(sha256)
    if work is None or work.state is None or work.state.status != "pending":
        await _finish(services, job)  # deleted, or done on demand meanwhile
        return
    if work.scan_status == "pending":
        raise RetryLater("the file waits for its scan")
    task = media_task(work.content_type)
    if work.scan_status == "infected" or task is None:
        await _finish(services, job)
        return
    # 2. Decode in the sandbox; a failure there is the content's, not worth a retry.
    async with local_copy(services, sha256, work.size) as path:
        state = await describe_path(services, path, sha256, work.content_type, task, work.state)
    # 3. Keep it, unless the bytes went meanwhile.
    async with services.db.write() as conn:
        media = Media(conn)
        if await media.work(sha256) is None:
            await delete_previews(services, sha256)
        else:
            await media.set_state(sha256, state)
            changed = await changed_files(conn, sha256, lambda r: replace(r, media=state))
            await tell_updated(conn, services.settings.public_url, changed)
        await Jobs(conn).finish(job)
    services.bus.notify()


async def describe_path(
    services: Services,
    path: str,
    sha256: str,
    content_type: str,
    task: str,
    known: MediaState,
    start_within: float | None = None,
) -> MediaState:
    """What the sandbox finds of blob `sha256`'s bytes at `path`, its previews stored; the
    `known` state marked failed when they cannot be described. SandboxBusy if the sandbox
    has no slot for them within `start_within` seconds (when given)."""
    settings = services.settings
    started = time.monotonic()
    try:
        found = await services.sandbox.run(
            task, path, start_within, content_type=content_type,
            max_pixels=settings.max_image_pixels, sizes=",".join(map(str, PREVIEW_SIZES)),
        )  # fmt: skip
    except MediaFailed as e:
        log.info("blob %s (%s) is not described: %s", sha256, content_type, e)
        return replace(known, status="failed")
    elapsed = (time.monotonic() - started) * 1000
    log.info("blob %s described as %s in %.0f ms", sha256, task, elapsed)
    previews = [await _keep(services, sha256, p) for p in found.get("previews", ())]
    fields = {name: found[key] for key, name in _FIELDS.items() if found.get(key) is not None}
    waveform = found.get("waveform")
    return MediaState(
        "done", **fields, waveform=tuple(waveform) if waveform else None,
        previews=tuple(previews),
    )  # fmt: skip


async def _keep(services: Services, sha256: str, found: dict[str, Any]) -> Preview:
    data: bytes = found["data"]
    key = await store_preview(services, sha256, int(found["size"]), data)
    return Preview(
        size=int(found["size"]), width=int(found["width"]), height=int(found["height"]),
        content_type=str(found["contentType"]), key=key, length=len(data),
    )  # fmt: skip


async def _finish(services: Services, job: Job) -> None:
    async with services.db.write() as conn:
        await Jobs(conn).finish(job)
