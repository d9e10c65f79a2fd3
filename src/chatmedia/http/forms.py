"""Reading upload forms into what the upload workflow needs."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from chatmedia.errors import InvalidMultipart, InvalidProperties
from chatmedia.http.multipart import MultipartForm
from chatmedia.pipelines.messages import MessageDraft
from chatmedia.pipelines.upload import UploadInfo

# Text with something in it besides white space (Python's str.isspace, which also counts
# U+001C-U+001F, unlike JSON Schema's \s).
NOT_BLANK = r"[^\s\x1c-\x1f]"
_NOT_BLANK = re.compile(NOT_BLANK)

# Text parts the native API reads itself; every other part becomes a property.
_NATIVE_FIELDS = frozenset({"conversationId", "name", "properties"})
_MESSAGE_FIELDS = frozenset({"body", "groupTag", "properties", "type"})


def read_form(request: Request) -> MultipartForm:
    """The request body as a streaming upload form."""
    return MultipartForm(request.headers.get("content-type"), request.stream())


def declared_length(request: Request) -> int | None:
    """The body's length as its Content-Length says (what an upload in it can at most
    take), or None when not said."""
    text = request.headers.get("content-length", "")
    return int(text) if text.isdigit() else None


def native_info(form: MultipartForm) -> UploadInfo:
    """`POST /v1/files`: optional `conversationId`, `name` (overrides the part's filename) and
    `properties` (a JSON object); other text parts are kept as properties by their names, and
    `properties` wins over them where both name a key."""
    fields = form.fields
    properties: dict[str, Any] = {k: v for k, v in fields.items() if k not in _NATIVE_FIELDS}
    if "properties" in fields:
        properties |= _json_object(fields["properties"])
    return UploadInfo(
        name=fields.get("name") or form.filename,
        conversation_id=fields.get("conversationId") or None,
        properties=properties,
    )


def compat_info(form: MultipartForm) -> UploadInfo:
    """`uploadFileStream`: `conversationId` is required."""
    conversation_id = form.fields.get("conversationId", "")
    if not _NOT_BLANK.search(conversation_id):
        raise InvalidMultipart("the form has no 'conversationId' part")
    return UploadInfo(name=form.filename, conversation_id=conversation_id.strip())


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidProperties(f"'properties' is not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise InvalidProperties("'properties' must be a JSON object")
    return value


def message_info(
    form: MultipartForm, conversation_id: str, sender: dict[str, Any]
) -> tuple[MessageDraft, UploadInfo]:
    """A multipart message: `file`, and optional `body`, `groupTag`, `type` and `properties`
    (a JSON object); other text parts are kept as properties by their names."""
    fields = form.fields
    properties: dict[str, Any] = {k: v for k, v in fields.items() if k not in _MESSAGE_FIELDS}
    if "properties" in fields:
        properties |= _json_object(fields["properties"])
    draft = MessageDraft(
        conversation_id=conversation_id,
        sender=sender,
        type=fields.get("type") or None,
        body=fields.get("body"),
        group_tag=fields.get("groupTag") or None,
        properties=properties,
    )
    return draft, UploadInfo(name=form.filename, conversation_id=conversation_id)
