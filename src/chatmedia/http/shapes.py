"""The JSON the API answers with, as the OpenAPI document publishes it.

These models document; they do not serialize (the views in chatmedia.views build the
answers, without a validation pass on every response). schemathesis checks each answer
against them in `make test`, so a view and its model cannot drift apart."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Shape):
    code: str = Field(description="Stable, snake_case: what a client may branch on")
    message: str = Field(description="For people; may change")


class Error(_Shape):
    """Every error of the native API."""

    error: ErrorDetail


class FileEngineError(_Shape):
    """An upload refused in the file-engine's convention."""

    message: str
    error: ErrorDetail


class Scan(_Shape):
    """What the malware scanner said of a HOSTED file's bytes: its content is served once
    `clean` (or `skipped`: too large to scan), not while `pending`."""

    status: Literal["pending", "clean", "infected", "error", "skipped"]
    signature: str | None = Field(None, description="What was found, when infected")
    scanned_at: str | None = Field(None, alias="scannedAt", description="ISO 8601, UTC")


class PreviewShape(_Shape):
    size: Literal[320, 800] = Field(description="The box it fits, in pixels")
    width: int
    height: int
    content_type: str = Field(alias="contentType")
    url: str = Field(description="Signed like the file's url")


class Media(_Shape):
    """What a HOSTED file is as media: only what applies and is known so far."""

    processing: Literal["pending", "done", "failed", "unsupported"]
    width: int | None = Field(None, description="As displayed (after EXIF rotation)")
    height: int | None = None
    duration_ms: int | None = Field(None, alias="durationMs", description="Audio, video")
    blurhash: str | None = Field(None, description="A placeholder: images, video posters")
    waveform: list[int] | None = Field(None, description="Audio: 64 levels, 0-100")
    pages: int | None = Field(None, description="PDF")
    previews: list[PreviewShape] | None = None


class File(_Shape):
    """A HOSTED file (stored here) or an EXTERNAL one (a reference)."""

    id: str
    type: Literal["HOSTED", "EXTERNAL"]
    name: str
    stored_name: str = Field(alias="storedName")
    content_type: str = Field(alias="contentType")
    size: int
    url: str = Field(description="The content URL of a HOSTED file; the reference of another")
    sha256: str | None = Field(description="Hex SHA-256 of the content; null when EXTERNAL")
    conversation_id: str | None = Field(alias="conversationId")
    properties: dict[str, Any]
    created_at: str = Field(alias="createdAt", description="ISO 8601, UTC")
    scan: Scan | None = Field(None, description="Present when the file was stored with scanning on")
    media: Media | None = Field(
        None, description="Present when the file is an image, video, audio or PDF"
    )
    metadata_stripped: bool | None = Field(
        None,
        alias="metadataStripped",
        description="Present (true) when location or other metadata was removed",
    )


class FileQuarantined(_Shape):
    """A file found infected: clients take it away."""

    id: str
    conversation_id: str | None = Field(alias="conversationId")
    scan: Scan


class FilePage(_Shape):
    items: list[File]
    next_cursor: str | None = Field(alias="nextCursor", description="null on the last page")


class Message(_Shape):
    id: str
    conversation_id: str = Field(alias="conversationId")
    type: Literal["TEXT", "FILE", "IMAGE", "VIDEO", "AUDIO"]
    body: str | None
    file: File | None = Field(description="null for text, or once the file was deleted")
    group_tag: str | None = Field(alias="groupTag")
    properties: dict[str, Any]
    sender: dict[str, Any]
    created_at: str = Field(alias="createdAt")


class MessagePage(_Shape):
    items: list[Message]
    next_cursor: str | None = Field(alias="nextCursor")


class Erased(_Shape):
    """What erasing a conversation removed."""

    files: int
    messages: int
    events: int


class ConversationDeleted(Erased):
    conversation_id: str = Field(alias="conversationId")


class Event(_Shape):
    """What happened: `data` is the Message or File as it was then, or what an erasure
    removed."""

    id: str
    type: Literal[
        "message.created", "message.deleted", "file.created", "file.deleted",
        "file.updated", "file.quarantined", "conversation.deleted",
    ]  # fmt: skip
    conversation_id: str | None = Field(alias="conversationId")
    created_at: str = Field(alias="createdAt")
    data: Message | File | FileQuarantined | ConversationDeleted


class StreamLink(_Shape):
    url: str
    expires_at: str = Field(alias="expiresAt")


class Webhook(_Shape):
    id: str
    url: str
    events: list[str]
    created_at: str = Field(alias="createdAt")
    secret: str | None = Field(None, description="Only in the answer that created it")


class WebhookList(_Shape):
    items: list[Webhook]


class Delivery(_Shape):
    id: str
    event_id: str = Field(alias="eventId")
    event_type: str = Field(alias="eventType")
    conversation_id: str | None = Field(alias="conversationId")
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None = Field(alias="lastStatus")
    last_error: str | None = Field(alias="lastError")
    next_attempt_at: str | None = Field(alias="nextAttemptAt")
    delivered_at: str | None = Field(alias="deliveredAt")
    created_at: str = Field(alias="createdAt")


class DeliveryPage(_Shape):
    items: list[Delivery]
    next_cursor: str | None = Field(alias="nextCursor")


class ClientConfig(_Shape):
    max_upload_size: int = Field(alias="maxUploadSize")
    allowed_types: list[str] = Field(alias="allowedTypes")
    blocked_types: list[str] = Field(alias="blockedTypes")


class Status(_Shape):
    status: Literal["ok"]


class FileEngineUpload(_Shape):
    message: str
    etag: str = Field(description="Hex SHA-256 of the content")
    name: str = Field(description="The stored name, for downloadFileStream")
    type: str
    size: int


class FileStat(_Shape):
    name: str
    type: str
    size: int
    etag: str | None
    last_modified: str = Field(alias="lastModified")


class Key(_Shape):
    """An API key; `key` (the secret) only in the answer that created it."""

    id: str
    name: str
    scopes: list[str]
    tenant: str | None = Field(description="null: no tenant of its own (the default one)")
    conversations: list[str] | None = Field(description="null: any conversation")
    expires_at: str | None = Field(alias="expiresAt")
    created_at: str = Field(alias="createdAt")
    last_used_at: str | None = Field(alias="lastUsedAt", description="To the minute")
    revoked_at: str | None = Field(alias="revokedAt")
    rate_limit: str | None = Field(alias="rateLimit", description="null: the default rate")
    key: str | None = Field(None, description="Only in the answer that created it")


class KeyList(_Shape):
    items: list[Key]


class Quota(_Shape):
    """A tenant's quotas; null: unlimited."""

    max_bytes: int | None = Field(alias="maxBytes")
    max_files: int | None = Field(alias="maxFiles")
    max_daily_bytes: int | None = Field(alias="maxDailyBytes", description="Per day, UTC")


class Reserved(_Shape):
    """What uploads under way hold of the quotas."""

    bytes: int
    files: int


class TenantUsage(_Shape):
    """What a tenant holds, and its quotas."""

    tenant: str
    bytes: int = Field(description="Stored: each file counts in full, even when deduplicated")
    files: int
    daily_bytes: int = Field(alias="dailyBytes", description="Added today (UTC)")
    reserved: Reserved
    quota: Quota
    own_quota: bool = Field(alias="ownQuota", description="false: CHATMEDIA_QUOTA_* apply")


class TenantList(_Shape):
    items: list[TenantUsage]


class QuarantineRecord(_Shape):
    """What the scanner found: an upload refused (`fileId` null) or a stored file found
    infected later."""

    id: str
    sha256: str
    size: int
    signature: str
    tenant: str
    key_id: str | None = Field(alias="keyId", description="The uploading key, when known")
    file_id: str | None = Field(alias="fileId")
    bytes_kept: bool = Field(alias="bytesKept")
    detected_at: str = Field(alias="detectedAt")
    released_at: str | None = Field(alias="releasedAt")
    released_by: str | None = Field(alias="releasedBy", description="The releasing key's id")


class QuarantinePage(_Shape):
    items: list[QuarantineRecord]
    next_cursor: str | None = Field(alias="nextCursor", description="null on the last page")
