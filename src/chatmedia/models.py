"""Frozen value types passed between the layers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

FileType = Literal["HOSTED", "EXTERNAL"]
MessageType = Literal["TEXT", "FILE", "IMAGE", "VIDEO", "AUDIO"]
ScanStatus = Literal["pending", "clean", "infected", "error", "skipped"]
MediaStatus = Literal["pending", "done", "failed", "unsupported"]


@dataclass(frozen=True, slots=True)
class ScanState:
    """What the scanner said of a file's bytes (chatmedia.scanning): `signature` names what
    it found (infected), `scanned_at` is when it finished."""

    status: ScanStatus
    signature: str | None = None
    scanned_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Preview:
    """A smaller image of a file, kept in the blob store under `key`: `size` is the box
    it fits (320 or 800), `length` its bytes."""

    size: int
    width: int
    height: int
    content_type: str
    key: str
    length: int


@dataclass(frozen=True, slots=True)
class MediaState:
    """What a file's bytes are as media (chatmedia.media): dimensions as displayed, a
    duration, a placeholder, a voice note's waveform, a PDF's pages, its previews; and
    whether the work that finds them is done."""

    status: MediaStatus
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    blurhash: str | None = None
    waveform: tuple[int, ...] | None = None
    pages: int | None = None
    previews: tuple[Preview, ...] = ()

    def preview(self, size: int) -> Preview | None:
        """The preview made for box `size`, if any."""
        return next((p for p in self.previews if p.size == size), None)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A file's metadata. A HOSTED file has a blob (`sha256`); an EXTERNAL file is a
    reference to a `url` elsewhere."""

    id: str
    type: FileType
    name: str
    stored_name: str
    content_type: str
    size: int
    sha256: str | None
    conversation_id: str | None
    properties: Mapping[str, Any]
    created_at: datetime
    tenant: str
    url: str | None = None
    link_generation: int = 0
    # Its bytes' scan (kept on the blob): None when they were stored without scanning.
    scan: ScanState | None = None
    # Its bytes as media (kept on the blob): None when they are not media.
    media: MediaState | None = None
    # Whether metadata (location…) was taken out of the bytes before they were stored.
    metadata_stripped: bool = False

    @property
    def quarantined(self) -> bool:
        """Found infected: hidden from everyone but admins, its content from everyone."""
        return self.scan is not None and self.scan.status == "infected"

    @property
    def etag(self) -> str:
        """Strong entity tag (RFC 9110 §8.8.3), derived from the content hash."""
        return f'"{self.sha256}"'


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message of a conversation; `file_id` names its file, if any."""

    id: str
    conversation_id: str
    type: MessageType
    body: str | None
    file_id: str | None
    group_tag: str | None
    properties: Mapping[str, Any]
    sender: Mapping[str, Any]
    created_at: datetime
    tenant: str


@dataclass(frozen=True, slots=True)
class Event:
    """An entry of the event log; `seq` is its id."""

    seq: int
    type: str
    conversation_id: str | None
    data: Mapping[str, Any]
    created_at: datetime
    tenant: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's record; the key itself is never stored, only its hash. `tenant` None:
    no tenant of its own (it works in the default one); `conversations` None: any."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    scopes: tuple[str, ...]
    tenant: str | None
    conversations: tuple[str, ...] | None
    expires_at: datetime | None
    last_used_at: datetime | None
    rate_limit: str | None = None  # its own request rate ("50/s"), else the default

    def active(self, now: datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a newest-first listing; `next_cursor` is None on the last page."""

    items: tuple[FileRecord, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """What the scanner found: an upload refused (`file_id` None) or a stored file found
    infected later; released by an admin's override (`released_by`, a key id). `seq` is
    its id (0 until it is kept)."""

    seq: int
    sha256: str
    size: int
    signature: str
    tenant: str
    key_id: str | None
    file_id: str | None
    blob_kept: bool
    detected_at: datetime
    released_at: datetime | None = None
    released_by: str | None = None
