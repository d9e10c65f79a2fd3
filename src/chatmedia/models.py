"""Frozen value types passed between the layers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

FileType = Literal["HOSTED", "EXTERNAL"]
MessageType = Literal["TEXT", "FILE", "IMAGE", "VIDEO", "AUDIO"]


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
    url: str | None = None

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


@dataclass(frozen=True, slots=True)
class Event:
    """An entry of the event log; `seq` is its id."""

    seq: int
    type: str
    conversation_id: str | None
    data: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's record; the key itself is never stored, only its hash."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a newest-first listing; `next_cursor` is None on the last page."""

    items: tuple[FileRecord, ...]
    next_cursor: str | None
