"""Media found before an upload answers: a new image is described (size as displayed,
BlurHash, previews) while its sender waits, when that is quick, so that the File of the
answer, and the message its sender posts next, carry it all and no `file.updated` has to
follow. A 12 MP photo takes about 60 ms in the sandbox; a sender of Synapse's waits about
300 ms for the thumbnails it makes the same way.

Only when it cannot hold anyone up for long: images (not video, audio or PDF, whose
decoding takes longer), bytes staged on this machine (a local store), content the scan
allows and no file has yet, a sandbox slot free at once or soon (START_WITHIN, behind
other uploads' tasks only, no more of them waiting than there are slots), and within
CHATMEDIA_MEDIA_INLINE_TIMEOUT. Otherwise, or on timeout, the media job does it after the
answer, as for every other kind."""

from __future__ import annotations

import anyio

from chatmedia.db.media import Media
from chatmedia.media.job import describe_path
from chatmedia.media.kinds import media_task
from chatmedia.media.sandbox import SandboxBusy
from chatmedia.media.store import delete_previews
from chatmedia.models import MediaState, ScanState
from chatmedia.services import Services
from chatmedia.storage import StagedBlob

_INLINE_TASKS = frozenset({"image"})
# How long an upload waits for a sandbox slot other uploads hold (see Sandbox.idle): about
# one 12 MP photo's turn. Four such photos sent at once are then all described in their
# uploads (two wait for the first two) instead of two by the job after their answers.
START_WITHIN = 0.15


async def describe_inline(
    services: Services,
    blob: StagedBlob,
    content_type: str,
    scan: ScanState | None,
    dimensions: tuple[int, int] | None,
) -> MediaState | None:
    """The media of staged bytes, when it may be found now and is found in time (None
    otherwise: the job will find it)."""
    settings = services.settings
    # 1. Only what is quick and allowed.
    task = media_task(content_type)
    if not settings.media_processing or settings.media_inline_timeout <= 0:
        return None
    if task not in _INLINE_TASKS or services.local_paths is None:
        return None
    if scan is not None and scan.status not in ("clean", "skipped"):
        return None
    if not services.sandbox.idle():
        return None  # busy beyond the tasks running now
    async with services.db.read() as conn:
        if await Media(conn).state(blob.sha256) is not None:
            return None  # bytes stored before: what is known of them stands
    # 2. Described in the sandbox, for as long as the sender may wait.
    width, height = dimensions or (None, None)
    path = str(services.local_paths.staged_path(blob))
    pending = MediaState("pending", width=width, height=height)
    with anyio.move_on_after(settings.media_inline_timeout):
        try:
            return await describe_path(
                services, path, blob.sha256, content_type, task, pending, START_WITHIN
            )
        except SandboxBusy:  # the tasks before it took longer than a photo's
            return None
    return None


async def forget_inline(services: Services, sha256: str) -> None:
    """Drop the previews made for an upload that failed afterwards, unless the bytes are
    stored after all (by another upload of them, meanwhile)."""
    async with services.db.read() as conn:
        if await Media(conn).state(sha256) is not None:
            return
    await delete_previews(services, sha256)
