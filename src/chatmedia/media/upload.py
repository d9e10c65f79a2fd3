"""What a new file's bytes are as media when it is stored: the dimensions its header
gave, and the job that finds the rest."""

from __future__ import annotations

from datetime import datetime

from chatmedia.db.engine import Conn
from chatmedia.db.jobs import Jobs, NewJob
from chatmedia.db.media import Media
from chatmedia.media.job import MEDIA_JOB
from chatmedia.media.kinds import initial_status
from chatmedia.models import MediaState


async def settle_media(
    conn: Conn,
    sha256: str,
    content_type: str,
    dimensions: tuple[int, int] | None,
    stripped: bool,
    now: datetime,
    processing: bool = True,
) -> MediaState | None:
    """In the upload's write transaction, its blob's lock held: the media its file has
    (none without `processing`, CHATMEDIA_MEDIA_PROCESSING); when `stripped` (this upload
    took metadata out) the blob says so. Bytes stored before keep what is known of them;
    new media bytes get their job."""
    media = Media(conn)
    if stripped:
        await media.mark_stripped(sha256)
    if not processing:
        return None
    known = await media.state(sha256)
    status = initial_status(content_type)
    if known is not None or status is None:
        return known
    width, height = dimensions or (None, None)
    state = MediaState(status, width=width, height=height)
    await media.set_state(sha256, state)
    if status == "pending":
        await Jobs(conn).add([NewJob(MEDIA_JOB, sha256, now)], now)
    return state
