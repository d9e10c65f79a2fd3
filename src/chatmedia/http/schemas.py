"""JSON bodies of the routes, and what they become.

Each model is both the check and the published schema: the OpenAPI document gives each
field the very pattern, bounds and types the server applies (strict types: no "5" for 5),
so a request is valid by the document exactly when the server takes it. Rules between
fields are checked by a model validator and published beside it as `anyOf`. A field whose
own error the API documents names it in `FIELD_ERRORS` (see `jsonbody.validate`)."""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from chatmedia.access.links import MAX_TTL
from chatmedia.access.principal import CONVERSATION_PATTERN, TENANT_PATTERN, Scope
from chatmedia.db.usage import Limits
from chatmedia.egress.credentials import (
    CREDENTIAL_PATTERN,
    HEADER_NAME_PATTERN,
    HEADER_VALUE_PATTERN,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    RESERVED_HEADERS,
    SourceCredentials,
    parse_headers,
    parse_oauth,
)
from chatmedia.egress.urls import MAX_URL_LENGTH, URL_PATTERN
from chatmedia.errors import BadRequest, InvalidProperties, InvalidSourceUrl
from chatmedia.fairuse.rates import RATE_PATTERN, parse_rate
from chatmedia.mediatypes import CONTENT_TYPE_PATTERN
from chatmedia.pipelines.external import ExternalInfo
from chatmedia.pipelines.fetch import ImportRequest
from chatmedia.pipelines.keys import KeySpec
from chatmedia.pipelines.messages import Attachment, MediaUrl, MessageDraft, StoredFile
from chatmedia.pipelines.webhooks import EVENT_TYPES, MIN_SECRET_LENGTH
from chatmedia.units import MAX_SIZE

_TYPE_NOTE = "Accepted for compatibility; the stored type is always detected from the bytes."
# The names the fetcher sets itself, in any case, as JSON Schema (ECMA-262) has no flags.
_RESERVED_NAMES = "^(?:{})$".format(
    "|".join(
        "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in name)
        for name in sorted(RESERVED_HEADERS)
    )
)

Url = Annotated[
    str,
    Field(
        pattern=URL_PATTERN,
        max_length=MAX_URL_LENGTH,
        json_schema_extra={"format": "uri"},
        description="An absolute http(s) URL in ASCII (a host in its xn-- form), no user info",
    ),
]
ContentType = Annotated[
    str, Field(pattern=CONTENT_TYPE_PATTERN, description="A MIME type such as image/png")
]
Credential = Annotated[
    str, Field(pattern=CREDENTIAL_PATTERN, description="Visible ASCII, not blank")
]


def _integral(value: Any) -> Any:
    """JSON Schema counts 19.0 as an integer: so does the server, and nothing else (not
    "19", not true)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Size = Annotated[int, Field(strict=True, ge=0, le=MAX_SIZE), BeforeValidator(_integral)]
Properties = Annotated[dict[str, Any], Field(description="Any JSON object, kept with the file")]
MediaType = Literal["FILE", "IMAGE", "VIDEO", "AUDIO"]
EventType = Literal[
    "*", "message.created", "message.deleted", "file.created", "file.deleted",
    "file.updated", "file.quarantined", "conversation.deleted",
]  # fmt: skip
assert set(EventType.__args__) == {"*", *EVENT_TYPES}  # type: ignore[attr-defined]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=False)
    FIELD_ERRORS: ClassVar[dict[str, type[BadRequest]]] = {}


class AccessToken(BaseModel):
    """A bearer token the source takes."""

    model_config = ConfigDict(extra="forbid", strict=True)
    access_token: Credential = Field(alias="accessToken")


class ClientCredentialsBody(BaseModel):
    """OAuth 2.0 client credentials (RFC 6749 §4.4): chatmedia asks `tokenUrl` for a token."""

    model_config = ConfigDict(extra="forbid", strict=True)
    token_url: Url = Field(alias="tokenUrl")
    client_id: Credential = Field(alias="clientId")
    client_secret: Credential = Field(alias="clientSecret")
    scope: Credential | None = None


OAuth = AccessToken | ClientCredentialsBody
ExtraHeaders = Annotated[
    dict[
        Annotated[str, Field(pattern=HEADER_NAME_PATTERN)],
        Annotated[str, Field(pattern=HEADER_VALUE_PATTERN, max_length=MAX_HEADER_VALUE)],
    ],
    Field(
        max_length=MAX_HEADERS,
        description="Extra request headers, except those the fetcher sets itself",
        json_schema_extra={
            "additionalProperties": False,  # a name must match the pattern above
            "propertyNames": {"not": {"pattern": _RESERVED_NAMES}},
        },
    ),
]


class ImportBody(_Body):
    """`POST /v1/files/import`."""

    FIELD_ERRORS = {"sourceUrl": InvalidSourceUrl, "properties": InvalidProperties}
    source_url: Url = Field(alias="sourceUrl")
    channel: str | None = Field(None, description="A channel profile of the configuration")
    conversation_id: str | None = Field(None, alias="conversationId")
    file_name: str | None = Field(None, alias="fileName")
    mime_type: str | None = Field(None, alias="mimeType", description=_TYPE_NOTE)
    properties: Properties = Field(default_factory=dict)
    api_key_360: Credential | None = Field(None, alias="apiKey360", description="360dialog key")
    oauth: OAuth | None = None
    headers: ExtraHeaders | None = None

    def to_request(self) -> ImportRequest:
        """The import this body asks for."""
        oauth = self.oauth.model_dump(by_alias=True, exclude_none=True) if self.oauth else None
        return ImportRequest(
            source_url=self.source_url,
            channel=self.channel,
            conversation_id=self.conversation_id or None,
            file_name=self.file_name,
            properties=self.properties,
            credentials=_credentials(self.api_key_360, oauth, self.headers),
        )


class FileEngineImportBody(_Body):
    """`POST /file-engine/api/uploadFileFromUrl` (JSON or a urlencoded form)."""

    FIELD_ERRORS = {"sourceUrl": InvalidSourceUrl}
    source_url: Url = Field(alias="sourceUrl")
    channel: str = Field(min_length=1)
    conversation_id: str | None = Field(None, alias="conversationId")
    file_name: str | None = Field(None, alias="fileName")
    oauth: OAuth | Annotated[str, Field(pattern=HEADER_VALUE_PATTERN)] | None = Field(
        None, description="An object as in the native API, that object as JSON, or a token"
    )
    api_key_360: Credential | Literal[""] | None = Field(None, alias="APIKey360")
    mime_type: str | None = Field(None, description=_TYPE_NOTE)

    def to_request(self) -> ImportRequest:
        """The import this body asks for."""
        oauth: dict[str, Any] | None = None
        if isinstance(self.oauth, BaseModel):
            oauth = self.oauth.model_dump(by_alias=True, exclude_none=True)
        elif isinstance(self.oauth, str) and self.oauth.strip():
            oauth = _json_object(self.oauth) or {"accessToken": self.oauth}
        return ImportRequest(
            source_url=self.source_url,
            channel=self.channel,
            conversation_id=self.conversation_id or None,
            file_name=self.file_name or None,
            credentials=_credentials(self.api_key_360, oauth, None),
        )


class ExternalFileBody(BaseModel):
    """A file kept elsewhere, as a message carries it."""

    model_config = ConfigDict(extra="ignore", strict=True)
    url: Url
    name: str | None = None
    content_type: ContentType = Field(alias="contentType")
    size: Size


class ExternalBody(ExternalFileBody):
    """`POST /v1/files/external`."""

    FIELD_ERRORS: ClassVar[dict[str, type[BadRequest]]] = {
        "url": InvalidSourceUrl,
        "properties": InvalidProperties,
    }
    conversation_id: str | None = Field(None, alias="conversationId")
    properties: Properties = Field(default_factory=dict)

    def to_info(self) -> ExternalInfo:
        """The reference this body describes."""
        return ExternalInfo(
            url=self.url,
            content_type=self.content_type,
            size=self.size,
            name=self.name,
            conversation_id=self.conversation_id or None,
            properties=self.properties,
        )


def _message_variants(schema: dict[str, Any]) -> None:
    """The shapes a message takes, for the document: text (with `body`, or Hybrid Chat's
    `caption`), or media carrying exactly one of `fileId`, `file` and `mediaUrl`."""
    null = {"type": "null"}
    media = {"anyOf": [{"enum": list(MediaType.__args__)}, null]}  # type: ignore[attr-defined]
    text = {"anyOf": [{"const": "TEXT"}, null]}
    attachments = ("fileId", "file", "mediaUrl")

    def variant(required: str, kind: dict[str, Any], **more: Any) -> dict[str, Any]:
        props = {a: null for a in attachments if a != required} | {"type": kind}
        props |= {required: {"not": null}} | more
        return {"required": [required], "properties": props}

    words = {"type": "string", "minLength": 1}
    schema["anyOf"] = [
        variant("body", text, fileId=null, body=words),
        variant("caption", text, fileId=null, body=null, caption=words),
        variant("fileId", media),
        variant("file", media),
        variant("mediaUrl", media),
    ]


class MessageBody(_Body):
    """`POST /v1/conversations/{conversationId}/messages` as JSON: a text message, or a
    media message carrying `fileId` (a stored file), `file` (an external one) or Hybrid
    Chat's `mediaUrl` (with `caption`, `mimeType`, `fileName`, `size`)."""

    model_config = ConfigDict(json_schema_extra=_message_variants)
    FIELD_ERRORS = {
        "mediaUrl": InvalidSourceUrl,
        "file.url": InvalidSourceUrl,
        "properties": InvalidProperties,
    }
    type: Literal["TEXT", "FILE", "IMAGE", "VIDEO", "AUDIO"] | None = Field(
        None, description="Derived from the file's type when absent"
    )
    body: str | None = None
    file_id: str | None = Field(None, alias="fileId")
    file: ExternalFileBody | None = None
    media_url: Url | None = Field(None, alias="mediaUrl")
    caption: str | None = Field(None, description="The body, when `body` is absent")
    mime_type: ContentType | Literal[""] | None = Field(None, alias="mimeType")
    file_name: str | None = Field(None, alias="fileName")
    size: Size | None = None
    group_tag: str | None = Field(None, alias="groupTag")
    properties: Properties = Field(default_factory=dict)
    sender: dict[str, Any] | None = Field(None, description="Defaults to the API key")

    @model_validator(mode="after")
    def _one_shape(self) -> MessageBody:
        given = [x for x in (self.file_id, self.file, self.media_url) if x is not None]
        if len(given) > 1:
            raise ValueError("give at most one of fileId, file and mediaUrl")
        if not given and self.type not in (None, "TEXT"):
            raise ValueError(f"a {self.type} message needs fileId, file or mediaUrl")
        if not given and not self.text:
            raise ValueError("a TEXT message needs a body")
        if given and self.type == "TEXT":
            raise ValueError("a TEXT message cannot carry a file; use FILE, IMAGE, VIDEO or AUDIO")
        return self

    @property
    def text(self) -> str | None:
        """The message's text: `body`, else Hybrid Chat's `caption`."""
        return self.body if self.body is not None else self.caption

    def to_post(
        self, conversation_id: str, sender: dict[str, Any]
    ) -> tuple[MessageDraft, Attachment | None]:
        """The message and the file it carries."""
        attachment: Attachment | None = None
        if self.file_id is not None:
            attachment = StoredFile(self.file_id)
        elif self.file is not None:
            attachment = ExternalInfo(
                url=self.file.url,
                content_type=self.file.content_type,
                size=self.file.size,
                name=self.file.name,
            )
        elif self.media_url is not None:
            attachment = MediaUrl(self.media_url, self.mime_type, self.file_name, self.size)
        draft = MessageDraft(
            conversation_id=conversation_id,
            sender=self.sender or sender,
            type=self.type,
            body=self.text,
            group_tag=self.group_tag,
            properties=self.properties,
        )
        return draft, attachment


class WebhookBody(_Body):
    """`POST /v1/webhooks`."""

    FIELD_ERRORS = {"url": InvalidSourceUrl}
    url: Url
    events: list[EventType] | None = Field(None, description='Event types; ["*"], the default')
    secret: str | None = Field(
        None, min_length=MIN_SECRET_LENGTH, description="Generated when absent, and shown once"
    )


class KeyBody(_Body):
    """`POST /v1/keys`."""

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1)
    tenant: Annotated[str, Field(pattern=TENANT_PATTERN)] | None = None
    conversations: list[Annotated[str, Field(pattern=CONVERSATION_PATTERN)]] | None = Field(
        None, min_length=1, description="Exact ids, or prefixes such as 'acme-*'"
    )
    expires_at: AwareDatetime | None = Field(
        None, alias="expiresAt", strict=False, description="A time to come, with its offset"
    )
    rate_limit: Annotated[str, Field(pattern=RATE_PATTERN)] | None = Field(
        None,
        alias="rateLimit",
        description="Its own request rate, N/s, N/min or N/h (a burst of 2N), at most the"
        " creating key's; by default the creating key's own, else CHATMEDIA_RATE_LIMIT",
    )

    def to_spec(self) -> KeySpec:
        """The key this body asks for."""
        return KeySpec(
            name=self.name,
            scopes=tuple(dict.fromkeys(self.scopes)),
            tenant=self.tenant,
            conversations=None if self.conversations is None else tuple(self.conversations),
            expires_at=self.expires_at,
            rate_limit=None if self.rate_limit is None else parse_rate(self.rate_limit),
        )


class QuotaBody(_Body):
    """`PUT /v1/tenants/{tenant}/quota`: each quota in bytes or files; null or absent is
    unlimited."""

    max_bytes: Size | None = Field(None, alias="maxBytes")
    max_files: Size | None = Field(None, alias="maxFiles")
    max_daily_bytes: Size | None = Field(None, alias="maxDailyBytes", description="Per day, UTC")

    def to_limits(self) -> Limits:
        """The quotas this body sets."""
        return Limits(self.max_bytes, self.max_files, self.max_daily_bytes)


class LinkBody(_Body):
    """`POST /v1/files/{file_id}/links`."""

    expires_in: int = Field(
        alias="expiresIn",
        ge=1,
        le=int(MAX_TTL.total_seconds()),
        description="Seconds the link works (at most 7 days)",
    )
    disposition: Literal["inline", "attachment"] = "inline"


class UiLinkBody(_Body):
    """`POST /v1/conversations/{conversationId}/ui-links`."""

    expires_in: int = Field(
        12 * 3600,
        alias="expiresIn",
        ge=1,
        le=int(MAX_TTL.total_seconds()),
        description="Seconds the page link works (default 12 hours, at most 7 days)",
    )
    can_upload: bool = Field(False, alias="canUpload", description="Upload files (files:write)")
    can_delete: bool = Field(False, alias="canDelete", description="Delete files (files:delete)")
    can_send: bool = Field(False, alias="canSend", description="Post messages (messages:write)")


def _credentials(
    api_key_360: str | None, oauth: dict[str, Any] | None, headers: dict[str, str] | None
) -> SourceCredentials:
    try:
        token, client = parse_oauth(oauth) if oauth is not None else (None, None)
        extra = parse_headers(headers) if headers is not None else ()
    except ValueError as e:
        raise BadRequest(str(e)) from None
    return SourceCredentials(
        api_key_360=api_key_360 or None,
        access_token=token,
        client_credentials=client,
        headers=extra,
    )


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
