"""JSON bodies of the import and external-file routes, and what they become."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from chatmedia.egress.credentials import SourceCredentials, parse_headers, parse_oauth
from chatmedia.errors import BadRequest
from chatmedia.pipelines.external import ExternalInfo
from chatmedia.pipelines.fetch import ImportRequest
from chatmedia.pipelines.messages import Attachment, MediaUrl, MessageDraft, StoredFile
from chatmedia.units import MAX_SIZE

_TYPE_NOTE = "Accepted for compatibility; the stored type is always detected from the bytes."


class ImportBody(BaseModel):
    """`POST /v1/files/import`."""

    model_config = ConfigDict(extra="ignore")

    source_url: str = Field(alias="sourceUrl", min_length=1)
    channel: str | None = Field(None, description="A channel profile of the configuration")
    conversation_id: str | None = Field(None, alias="conversationId")
    file_name: str | None = Field(None, alias="fileName")
    mime_type: str | None = Field(None, alias="mimeType", description=_TYPE_NOTE)
    properties: dict[str, Any] = Field(default_factory=dict)
    api_key_360: str | None = Field(None, alias="apiKey360", description="360dialog API key")
    oauth: dict[str, Any] | None = Field(
        None, description='{"accessToken"} or {"tokenUrl", "clientId", "clientSecret", "scope"}'
    )
    headers: dict[str, str] | None = Field(None, description="Extra request headers")

    def to_request(self) -> ImportRequest:
        """The import this body asks for."""
        return ImportRequest(
            source_url=self.source_url,
            channel=self.channel,
            conversation_id=self.conversation_id or None,
            file_name=self.file_name,
            properties=self.properties,
            credentials=_credentials(self.api_key_360, self.oauth, self.headers),
        )


class FileEngineImportBody(BaseModel):
    """`POST /file-engine/api/uploadFileFromUrl` (JSON or a urlencoded form)."""

    model_config = ConfigDict(extra="ignore")

    source_url: str = Field(alias="sourceUrl", min_length=1)
    channel: str = Field(min_length=1)
    conversation_id: str | None = Field(None, alias="conversationId")
    file_name: str | None = Field(None, alias="fileName")
    oauth: dict[str, Any] | str | None = Field(
        None, description="An object as in the native API, that object as JSON, or a token"
    )
    api_key_360: str | None = Field(None, alias="APIKey360")
    mime_type: str | None = Field(None, description=_TYPE_NOTE)

    def to_request(self) -> ImportRequest:
        """The import this body asks for."""
        oauth = self.oauth
        if isinstance(oauth, str):
            oauth = (_json_object(oauth) or {"accessToken": oauth}) if oauth.strip() else None
        return ImportRequest(
            source_url=self.source_url,
            channel=self.channel,
            conversation_id=self.conversation_id or None,
            file_name=self.file_name or None,
            credentials=_credentials(self.api_key_360, oauth, None),
        )


class ExternalBody(BaseModel):
    """`POST /v1/files/external`."""

    model_config = ConfigDict(extra="ignore")

    url: str = Field(min_length=1, description="Absolute http(s) URL of the file")
    name: str | None = None
    content_type: str = Field(alias="contentType", min_length=1)
    size: StrictInt = Field(ge=0, le=MAX_SIZE)
    conversation_id: str | None = Field(None, alias="conversationId")
    properties: dict[str, Any] = Field(default_factory=dict)

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


class ExternalFileBody(BaseModel):
    """A file kept elsewhere, as a message carries it."""

    model_config = ConfigDict(extra="ignore")

    url: str = Field(min_length=1)
    name: str | None = None
    content_type: str = Field(alias="contentType", min_length=1)
    size: StrictInt = Field(ge=0, le=MAX_SIZE)


class MessageBody(BaseModel):
    """`POST /v1/conversations/{conversationId}/messages` as JSON: a text message, or a
    media message carrying `fileId` (a stored file), `file` (an external one) or Hybrid
    Chat's `mediaUrl` (with `caption`, `mimeType`, `fileName`, `size`)."""

    model_config = ConfigDict(extra="ignore")

    type: str | None = Field(None, description="TEXT, FILE, IMAGE, VIDEO or AUDIO")
    body: str | None = None
    file_id: str | None = Field(None, alias="fileId")
    file: ExternalFileBody | None = None
    media_url: str | None = Field(None, alias="mediaUrl")
    caption: str | None = None
    mime_type: str | None = Field(None, alias="mimeType")
    file_name: str | None = Field(None, alias="fileName")
    size: StrictInt | None = Field(None, ge=0, le=MAX_SIZE)
    group_tag: str | None = Field(None, alias="groupTag")
    properties: dict[str, Any] = Field(default_factory=dict)
    sender: dict[str, Any] | None = Field(None, description="Defaults to the API key")

    def to_post(
        self, conversation_id: str, sender: dict[str, Any]
    ) -> tuple[MessageDraft, Attachment | None]:
        """The message and the file it carries."""
        given = [x for x in (self.file_id, self.file, self.media_url) if x is not None]
        if len(given) > 1:
            raise BadRequest("give at most one of fileId, file and mediaUrl")
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
            body=self.body if self.body is not None else self.caption,
            group_tag=self.group_tag,
            properties=self.properties,
        )
        return draft, attachment


class WebhookBody(BaseModel):
    """`POST /v1/webhooks`."""

    model_config = ConfigDict(extra="ignore")

    url: str = Field(min_length=1)
    events: list[str] | None = Field(None, description='Event types, or ["*"] (the default)')
    secret: str | None = Field(None, description="Generated when absent, and shown once")


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
