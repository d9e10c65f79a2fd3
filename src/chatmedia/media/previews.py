"""Serving a preview: the one made for the asked size, made on demand when its job has not
run yet — once per blob, however many ask at the same moment (one maker per process, and
across processes and nodes the job's claim)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import anyio

from chatmedia.access.content import check_content
from chatmedia.db.jobs import Jobs
from chatmedia.db.media import Media
from chatmedia.errors import PreviewNotAvailable
from chatmedia.media.job import MEDIA_JOB, media_job
from chatmedia.media.kinds import preview_size
from chatmedia.models import FileRecord, MediaState
from chatmedia.processing.jobs import LEASE, RetryLater, reschedule, running
from chatmedia.services import Services

# How often a request waiting for another process's preview looks for it (this
# process's job runner wakes it at once).
_POLL_SECONDS = 0.05
# The blobs this process is making previews for on demand, and who waits for them.
_making: dict[str, anyio.Event] = {}


async def preview_file(services: Services, record: FileRecord, asked: int) -> FileRecord:
    """A record to serve as the preview of a file the caller may read, for a box of
    `asked` pixels (another size gets the next larger one made). Raises what the file's
    scan says (chatmedia.access.content) and PreviewNotAvailable."""
    check_content(record, services.settings.scan_fail_open)
    size = preview_size(asked)
    media = record.media
    if media is not None and media.status == "pending" and record.sha256 is not None:
        media = await _made_now(services, record.sha256)
    preview = media.preview(size) if media is not None else None
    if preview is None:
        raise PreviewNotAvailable(f"file '{record.id}' has no preview")
    stem = record.name.rsplit(".", 1)[0]
    extension = ".png" if preview.content_type == "image/png" else ".jpg"
    return replace(
        record, sha256=preview.key, content_type=preview.content_type, size=preview.length,
        name=f"{stem}-{size}{extension}",
    )  # fmt: skip


async def _made_now(services: Services, sha256: str) -> MediaState | None:
    """The blob's media once its job has run: run here, or waited for."""
    done = _making.get(sha256)
    if done is None:
        done = _making[sha256] = anyio.Event()
        try:
            await _make(services, sha256)
        finally:
            del _making[sha256]
            done.set()
    else:
        await done.wait()
    async with services.db.read() as conn:
        return await Media(conn).state(sha256)


async def _make(services: Services, sha256: str) -> None:
    async with services.db.write() as conn:
        job = await Jobs(conn).claim(MEDIA_JOB, sha256, datetime.now(UTC), LEASE)
    if job is not None:
        try:
            with running(job):
                await media_job(services, job)
        except RetryLater as e:
            await reschedule(services, job, str(e))
        return
    # Another has the job (this process's job runner, which wakes the bus when it is
    # done, or another process): wait for what it finds, for as long as it may take.
    with anyio.move_on_after(services.settings.media_timeout + 5):
        while True:
            version = services.bus.version
            async with services.db.read() as conn:
                state = await Media(conn).state(sha256)
            if state is None or state.status != "pending":
                return
            with anyio.move_on_after(_POLL_SECONDS):
                await services.bus.wait(version)
