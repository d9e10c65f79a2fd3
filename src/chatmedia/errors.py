"""The errors a client can see. Each has a stable snake_case code and an HTTP status; one
handler (chatmedia.http.responses) renders them all as
``{"error": {"code": ..., "message": ...}}``.

    ChatMediaError
    ├── BadRequest (400)
    │   ├── InvalidMultipart
    │   ├── InvalidSourceUrl
    │   ├── InvalidIdempotencyKey
    │   ├── InvalidProperties
    │   ├── InvalidCursor
    │   └── InvalidUploadHeader
    ├── Unauthorized (401)
    ├── Forbidden (403)
    │   ├── DestinationNotAllowed
    │   ├── MissingScope
    │   ├── ConversationNotAllowed
    │   ├── TenantNotAllowed
    │   ├── InvalidSignature
    │   ├── LinkExpired
    │   ├── OriginNotAllowed
    │   └── QuotaExceeded
    ├── NotFound (404)
    │   ├── FileNotFound
    │   ├── PreviewNotAvailable
    │   ├── MessageNotFound
    │   ├── WebhookNotFound
    │   ├── KeyNotFound
    │   └── UploadNotFound
    ├── IdempotencyKeyInProgress (409)
    ├── FileNotReady (409)
    ├── UploadOffsetMismatch (409)
    ├── UploadExpired (410)
    ├── TusVersionUnsupported (412)
    ├── UploadTypeInvalid (415)
    ├── UploadLocked (423)
    ├── ChecksumMismatch (460)
    ├── PreconditionFailed (412)
    ├── FileTooLarge (413)
    ├── FieldTooLarge (413)
    ├── RequestTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── IdempotencyKeyReused (422)
    ├── MalwareDetected (422)
    ├── RangeNotSatisfiable (416)
    ├── RateLimited (429)
    ├── SourceError (502)
    ├── BackendUnavailable (503)
    └── SourceTimeout (504)
"""

from __future__ import annotations


class ChatMediaError(Exception):
    """Base of every client-visible error."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs."""
        return {}


class BadRequest(ChatMediaError):
    code = "invalid_request"
    status = 400


class InvalidMultipart(BadRequest):
    code = "invalid_multipart"


class InvalidProperties(BadRequest):
    code = "invalid_properties"


class InvalidSourceUrl(BadRequest):
    code = "invalid_source_url"


class InvalidIdempotencyKey(BadRequest):
    code = "invalid_idempotency_key"


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


class InvalidUploadHeader(BadRequest):
    """A tus header missing, malformed or contradicting another (the message names it)."""

    code = "invalid_upload_header"


class Unauthorized(ChatMediaError):
    code = "unauthorized"
    status = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="chatmedia"'}


class Forbidden(ChatMediaError):
    code = "forbidden"
    status = 403


class DestinationNotAllowed(Forbidden):
    """The fetcher will not connect there (and did not)."""

    code = "destination_not_allowed"


class MissingScope(Forbidden):
    """The key is valid but lacks the scope the route needs."""

    code = "missing_scope"


class ConversationNotAllowed(Forbidden):
    """The key is restricted to other conversations than the one it would create in."""

    code = "conversation_not_allowed"


class InvalidSignature(Forbidden):
    """A link tampered with, unsigned, signed by an unknown key, or revoked."""

    code = "invalid_signature"


class LinkExpired(Forbidden):
    code = "link_expired"


class OriginNotAllowed(Forbidden):
    """A key-less upload from a page whose origin is not in CHATMEDIA_CORS_ORIGINS."""

    code = "origin_not_allowed"


class TenantNotAllowed(Forbidden):
    """The key may not act in (or mint keys for) that tenant."""

    code = "tenant_not_allowed"


class QuotaExceeded(Forbidden):
    """The upload would take the tenant past one of its quotas (the message names it and
    the figures)."""

    code = "quota_exceeded"


class NotFound(ChatMediaError):
    code = "not_found"
    status = 404


class FileNotFound(NotFound):
    code = "file_not_found"


class PreviewNotAvailable(NotFound):
    """The file has no preview: it is not an image, video or PDF that is decoded, or its
    decoding failed."""

    code = "preview_not_available"


class IdempotencyKeyInProgress(ChatMediaError):
    """A request with the same Idempotency-Key is still being handled."""

    code = "idempotency_key_in_progress"
    status = 409


class IdempotencyKeyReused(ChatMediaError):
    """The same Idempotency-Key came with a different request."""

    code = "idempotency_key_reused"
    status = 422


class _TryAgain(ChatMediaError):
    """An error that tells the client when to ask again (Retry-After, in seconds)."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class FileNotReady(_TryAgain):
    """The file's content is not served yet: it is still being scanned (or its scan failed
    and CHATMEDIA_SCAN_FAIL is closed). Its metadata says which."""

    code = "file_not_ready"
    status = 409


class MalwareDetected(ChatMediaError):
    """The scanner found malware in the upload: nothing of it was kept."""

    code = "malware_detected"
    status = 422

    def __init__(self, signature: str) -> None:
        super().__init__(f"the file contains malware ({signature}) and was refused")
        self.signature = signature


class PreconditionFailed(ChatMediaError):
    code = "precondition_failed"
    status = 412


class MessageNotFound(NotFound):
    code = "message_not_found"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class UploadNotFound(NotFound):
    code = "upload_not_found"


class UploadExpired(ChatMediaError):
    """A resumable upload untouched past its expiry: removed, with its bytes."""

    code = "upload_expired"
    status = 410


class UploadOffsetMismatch(ChatMediaError):
    """The request's Upload-Offset is not where the upload is (HEAD tells)."""

    code = "upload_offset_mismatch"
    status = 409


class TusVersionUnsupported(ChatMediaError):
    """No Tus-Resumable header, or a version this server does not speak."""

    code = "tus_version_unsupported"
    status = 412

    @property
    def headers(self) -> dict[str, str]:
        return {"Tus-Version": "1.0.0"}


class UploadTypeInvalid(ChatMediaError):
    """A PATCH whose Content-Type is not application/offset+octet-stream."""

    code = "invalid_content_type"
    status = 415


class UploadLocked(_TryAgain):
    """Another request is writing to the upload (a connection that has not been seen to
    end yet); it is taken over once its bytes stop for `retry_after` seconds."""

    code = "upload_locked"
    status = 423


class ChecksumMismatch(ChatMediaError):
    """The chunk's bytes do not have the Upload-Checksum sent: it was discarded whole."""

    code = "checksum_mismatch"
    status = 460


class FileTooLarge(ChatMediaError):
    code = "file_too_large"
    status = 413


class UploadTooFragmented(ChatMediaError):
    """A resumable upload written by more requests than its store can join (on S3, 10,000:
    a multipart upload's parts); sending it again in larger chunks succeeds."""

    code = "upload_too_fragmented"
    status = 413


class FieldTooLarge(ChatMediaError):
    code = "field_too_large"
    status = 413


class RequestTooLarge(ChatMediaError):
    code = "request_too_large"
    status = 413


class UnsupportedMediaType(ChatMediaError):
    code = "unsupported_media_type"
    status = 415


class RangeNotSatisfiable(ChatMediaError):
    """RFC 9110 §15.5.17: answered with Content-Range: bytes */SIZE."""

    code = "range_not_satisfiable"
    status = 416

    def __init__(self, size: int) -> None:
        super().__init__("the requested range is outside the content")
        self.size = size

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class RateLimited(ChatMediaError):
    """Over a request limit, or locked out after failed authentications: try again in
    `retry_after` seconds."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: int, policy: str, state: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.policy = policy
        self.state = state

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Retry-After": str(self.retry_after),
            "RateLimit-Policy": self.policy,
            "RateLimit": self.state,
        }


class SourceError(ChatMediaError):
    """A source answered 4xx/5xx, broke off, or sent something unusable."""

    code = "source_error"
    status = 502


class BackendUnavailable(ChatMediaError):
    """The database or the blob store does not answer; the client may retry soon."""

    code = "backend_unavailable"
    status = 503

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class SourceTimeout(ChatMediaError):
    code = "source_timeout"
    status = 504
