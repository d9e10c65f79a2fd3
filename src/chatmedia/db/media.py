"""Repository of what each blob is as media: its status and, as JSON, its fields and
previews (a blob's media are the same for every file of those bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa

from chatmedia.db.engine import Conn
from chatmedia.db.schema import blobs, files
from chatmedia.models import MediaState, MediaStatus, Preview

_FIELDS = ("width", "height", "duration_ms", "blurhash", "pages")


def media_state(status: str | None, data: dict[str, Any] | None) -> MediaState | None:
    """The media of a blob row (None: the bytes are not media)."""
    if status is None:
        return None
    data = data or {}
    waveform = data.get("waveform")
    return MediaState(
        cast(MediaStatus, status),
        **{name: data.get(name) for name in _FIELDS},
        waveform=tuple(waveform) if waveform is not None else None,
        previews=tuple(Preview(**p) for p in data.get("previews", ())),
    )


def media_json(state: MediaState) -> dict[str, Any] | None:
    """What a blob row keeps of `state` besides its status."""
    data: dict[str, Any] = {
        name: value for name in _FIELDS if (value := getattr(state, name)) is not None
    }
    if state.waveform is not None:
        data["waveform"] = list(state.waveform)
    if state.previews:
        data["previews"] = [
            {"size": p.size, "width": p.width, "height": p.height,
             "content_type": p.content_type, "key": p.key, "length": p.length}
            for p in state.previews
        ]  # fmt: skip
    return data or None


@dataclass(frozen=True, slots=True)
class MediaWork:
    """What the media job of a blob needs: its type (sniffed, the same for every file of
    the bytes), its size, its scan status and its media so far."""

    content_type: str
    size: int
    scan_status: str | None
    state: MediaState | None


class Media:
    """Blobs' media, on one connection (and so one transaction)."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def state(self, sha256: str) -> MediaState | None:
        """A stored blob's media (None: not media, or no such blob)."""
        query = sa.select(blobs.c.media_status, blobs.c.media).where(blobs.c.sha256 == sha256)
        row = (await self._conn.execute(query)).first()
        return media_state(row.media_status, row.media) if row is not None else None

    async def work(self, sha256: str) -> MediaWork | None:
        """What the media job of blob `sha256` needs; None when no file has the bytes."""
        query = (
            sa.select(
                files.c.content_type, blobs.c.size, blobs.c.scan_status, blobs.c.media_status,
                blobs.c.media,
            )
            .select_from(blobs.join(files, files.c.sha256 == blobs.c.sha256))
            .where(blobs.c.sha256 == sha256)
            .limit(1)
        )  # fmt: skip
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        state = media_state(row.media_status, row.media)
        return MediaWork(row.content_type, row.size, row.scan_status, state)

    async def set_state(self, sha256: str, state: MediaState) -> None:
        """Record a blob's media."""
        await self._conn.execute(
            blobs.update()
            .where(blobs.c.sha256 == sha256)
            .values(media_status=state.status, media=media_json(state))
        )

    async def mark_stripped(self, sha256: str) -> None:
        """Record that metadata was taken out of the bytes before they were stored."""
        await self._conn.execute(
            blobs.update().where(blobs.c.sha256 == sha256).values(metadata_stripped=True)
        )
