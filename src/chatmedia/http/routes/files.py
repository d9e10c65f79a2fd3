"""The native API: /v1/files and /v1/config."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from chatmedia.access.principal import Principal
from chatmedia.cursors import CURSOR_PATTERN
from chatmedia.errors import (
    DestinationNotAllowed,
    FieldTooLarge,
    FileNotFound,
    FileNotReady,
    FileTooLarge,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidIdempotencyKey,
    InvalidMultipart,
    InvalidProperties,
    InvalidSignature,
    InvalidSourceUrl,
    LinkExpired,
    MalwareDetected,
    PreconditionFailed,
    PreviewNotAvailable,
    RangeNotSatisfiable,
    RequestTooLarge,
    SourceError,
    SourceTimeout,
    UnsupportedMediaType,
)
from chatmedia.http.content import content_response
from chatmedia.http.deps import authorized, get_services
from chatmedia.http.forms import declared_length, native_info, read_form
from chatmedia.http.jsonbody import json_body_doc, read_body, validate
from chatmedia.http.multipart import MAX_FIELD_LENGTH, MAX_PARTS, PART_NAME_PATTERN
from chatmedia.http.openapi import BINARY, LOCATION, answers
from chatmedia.http.schemas import ExternalBody, ImportBody, LinkBody
from chatmedia.http.shapes import ClientConfig, File, FilePage, StreamLink
from chatmedia.media.previews import preview_file
from chatmedia.models import FileRecord
from chatmedia.pipelines import files
from chatmedia.pipelines.external import create_external_file
from chatmedia.pipelines.fetch import import_file
from chatmedia.pipelines.upload import store_file
from chatmedia.services import Services
from chatmedia.views import file_view, timestamp

router = APIRouter(prefix="/v1", tags=["files"])
ServicesDep = Annotated[Services, Depends(get_services)]
Reader = Annotated[Principal, authorized("files:read")]
Writer = Annotated[Principal, authorized("files:write")]

# The pattern is checked by decode_cursor, for its own error code (invalid_cursor).
CURSOR = Query(
    description="`nextCursor` of the previous page", json_schema_extra={"pattern": CURSOR_PATTERN}
)
# Every POST that creates something takes an Idempotency-Key (chatmedia.http.idempotency).
IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and request within 24 h gets the first answer",
    "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
}
IDEMPOTENT = (InvalidIdempotencyKey, IdempotencyKeyInProgress, IdempotencyKeyReused)
# What an upload can be refused for, the form aside.
UPLOAD_ERRORS = (FileTooLarge, UnsupportedMediaType, MalwareDetected)
FORM_ERRORS = (InvalidMultipart, InvalidProperties, FieldTooLarge)
IMPORT_ERRORS = (
    InvalidSourceUrl,
    InvalidProperties,
    RequestTooLarge,
    DestinationNotAllowed,
    SourceError,
    SourceTimeout,
    *UPLOAD_ERRORS,
)
EXTERNAL_ERRORS = (InvalidSourceUrl, InvalidProperties, RequestTooLarge, UnsupportedMediaType)
CREATED: dict[str, Any] = {"ok": File, "status": 201, "headers": LOCATION}


# One text part. Untyped, as every part is text on the wire whatever a client serialized
# into it, but never an array, which multipart sends as a part repeated under one name.
TEXT_PART: dict[str, Any] = {"type": ["string", "number", "integer", "boolean", "object", "null"]}


def form_doc(
    fields: dict[str, Any], *, loose: bool, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """OpenAPI for a multipart/form-data body: a `file` part and the text parts `fields`
    (`loose`: any other text part too, kept as a property). Each part names itself in a
    `Content-Disposition: form-data` header (RFC 7578 §4.2); at most 64 text parts of at
    most 64 Ki characters each. `properties` is a JSON object, sent as its JSON text."""
    text = TEXT_PART | {"maxLength": MAX_FIELD_LENGTH}
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["file", *required],
        "properties": {"file": {"type": "string", "format": "binary"}} | fields,
        "maxProperties": MAX_PARTS,
        "propertyNames": {"pattern": PART_NAME_PATTERN},
        "additionalProperties": text if loose else False,
    }
    form = {"schema": schema}
    if "properties" in fields:
        form["encoding"] = {"properties": {"contentType": "application/json"}}
    return {"multipart/form-data": form}


UPLOAD_FORM = form_doc(
    {
        "conversationId": TEXT_PART,
        "name": TEXT_PART | {"description": "Overrides the part's filename"},
        "properties": {"type": "object", "description": "Kept with the file"},
    },
    loose=True,
)


@router.post(
    "/files",
    status_code=201,
    openapi_extra={
        "requestBody": {"required": True, "content": UPLOAD_FORM},
        "parameters": [IDEMPOTENCY_KEY],
    },
    response_model=None,
    responses=answers(*FORM_ERRORS, *UPLOAD_ERRORS, *IDEMPOTENT, **CREATED),
    summary="Upload a file",
)
async def upload_file(request: Request, services: ServicesDep, principal: Writer) -> JSONResponse:
    """Upload one file as multipart/form-data; other text parts become properties."""
    form = read_form(request)
    record = await store_file(
        services, principal, form.file_chunks(), lambda: native_info(form), declared_length(request)
    )
    return _created(record, services)


@router.post(
    "/files/import",
    status_code=201,
    openapi_extra=json_body_doc(ImportBody, IDEMPOTENCY_KEY),
    response_model=None,
    responses=answers(*IMPORT_ERRORS, *IDEMPOTENT, **CREATED),
    summary="Import a file from a URL",
)
async def import_from_url(
    request: Request, services: ServicesDep, principal: Writer
) -> JSONResponse:
    """The server fetches `sourceUrl` (with the channel's credentials, under the fetch
    policy) and stores it as if it had been uploaded."""
    body = validate(ImportBody, await read_body(request))
    return _created(await import_file(services, principal, body.to_request()), services)


@router.post(
    "/files/external",
    status_code=201,
    openapi_extra=json_body_doc(ExternalBody, IDEMPOTENCY_KEY),
    response_model=None,
    responses=answers(*EXTERNAL_ERRORS, *IDEMPOTENT, **CREATED),
    summary="Record a file kept elsewhere",
)
async def create_external(
    request: Request, services: ServicesDep, principal: Writer
) -> JSONResponse:
    """An EXTERNAL file: a reference whose content requests are redirected to its URL."""
    body = validate(ExternalBody, await read_body(request))
    return _created(await create_external_file(services, principal, body.to_info()), services)


def _created(record: FileRecord, services: Services) -> JSONResponse:
    base = services.settings.public_url
    headers = {"Location": f"{base}/v1/files/{record.id}"}
    if record.sha256:
        headers["ETag"] = record.etag
    return JSONResponse(file_view(record, base, services.links), 201, headers)


@router.get(
    "/files",
    response_model=None,
    responses=answers(InvalidCursor, ok=FilePage),
    summary="List files, newest first",
)
async def list_files(
    services: ServicesDep,
    principal: Reader,
    conversation_id: Annotated[str | None, Query(alias="conversationId")] = None,
    limit: Annotated[int, Query(ge=1, le=files.MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, CURSOR] = None,
) -> dict[str, Any]:
    """A page of files; pass `nextCursor` back as `cursor` for the next page."""
    page = await files.list_files(services, principal, conversation_id, limit, cursor)
    base = services.settings.public_url
    items = [file_view(r, base, services.links) for r in page.items]
    return {"items": items, "nextCursor": page.next_cursor}


@router.get(
    "/files/{file_id}",
    response_model=None,
    responses=answers(FileNotFound, ok=File),
    summary="A file's metadata",
)
async def get_file(file_id: str, services: ServicesDep, principal: Reader) -> dict[str, Any]:
    """The File."""
    record = await files.get_file(services, principal, file_id)
    return file_view(record, services.settings.public_url, services.links)


CONTENT_ANSWERS: dict[int | str, dict[str, Any]] = answers(
    FileNotFound, FileNotReady, PreconditionFailed, RangeNotSatisfiable, ok=BINARY
) | {
    206: {"description": "One range (RFC 9110 §14)", "content": BINARY},
    304: {"description": "Not modified (If-None-Match, If-Modified-Since)"},
    307: {"description": "Where an EXTERNAL file, or a presigned copy, is"},
}


# A signed link (chatmedia.access.links) stands for a key: its parameters, all or none.
SIGNED_LINK: dict[str, Any] = {
    "security": [{"signedLink": []}],
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in (
            ("exp", {"type": "integer"}),
            ("disp", {"enum": ["inline", "attachment"]}),
            ("g", {"type": "integer", "minimum": 0}),
            ("kid", {"type": "string"}),
        )
    ],
}
LINKED_CONTENT = CONTENT_ANSWERS | answers(InvalidSignature, LinkExpired)


@router.get(
    "/files/{file_id}/content",
    response_class=Response,
    responses=LINKED_CONTENT,
    openapi_extra=SIGNED_LINK,
    summary="A file's bytes",
    operation_id="getContent",
)
@router.head(
    "/files/{file_id}/content",
    response_class=Response,
    responses=LINKED_CONTENT,
    openapi_extra=SIGNED_LINK,
    summary="A file's headers",
    operation_id="headContent",
)
async def get_content(
    file_id: str, request: Request, services: ServicesDep, principal: Reader
) -> Response:
    """The bytes, with Range (one range), ETag and conditional requests."""
    record = await files.get_file(services, principal, file_id)
    return await content_response(request, record, services)


PREVIEW_SIZE = Query(
    ge=1, le=100_000, description="The box in pixels; served: 320, else 800 (the next larger)"
)
PREVIEW_ANSWERS = LINKED_CONTENT | answers(FileNotReady, PreviewNotAvailable)


@router.get(
    "/files/{file_id}/preview",
    response_class=Response,
    responses=PREVIEW_ANSWERS,
    openapi_extra=SIGNED_LINK,
    summary="A preview of an image, video or PDF",
    operation_id="getPreview",
)
@router.head(
    "/files/{file_id}/preview",
    response_class=Response,
    responses=PREVIEW_ANSWERS,
    openapi_extra=SIGNED_LINK,
    summary="A preview's headers",
    operation_id="headPreview",
)
async def get_preview(
    file_id: str,
    request: Request,
    services: ServicesDep,
    principal: Reader,
    size: Annotated[int, PREVIEW_SIZE] = 320,
) -> Response:
    """A JPEG (PNG where there is transparency) that fits the box, made on demand when
    it was not made yet; served like content once the file may be."""
    record = await files.get_file(services, principal, file_id)
    return await content_response(request, await preview_file(services, record, size), services)


@router.post(
    "/files/{file_id}/links",
    status_code=201,
    openapi_extra=json_body_doc(LinkBody),
    response_model=None,
    responses=answers(FileNotFound, RequestTooLarge, ok=StreamLink, status=201),
    summary="A signed link to a file's content",
)
async def create_link(
    file_id: str, request: Request, services: ServicesDep, principal: Reader
) -> JSONResponse:
    """A URL of the file's content that works without any header, for `expiresIn` seconds:
    for a browser's <img>, a download link, a provider fetching media."""
    body = validate(LinkBody, await read_body(request))
    ttl = timedelta(seconds=body.expires_in)
    url, expires = await files.create_link(services, principal, file_id, ttl, body.disposition)
    return JSONResponse({"url": url, "expiresAt": timestamp(expires)}, 201)


@router.post(
    "/files/{file_id}/links/revoke",
    status_code=204,
    response_class=Response,
    responses=answers(FileNotFound),
    summary="End every link made so far to a file",
)
async def revoke_links(file_id: str, services: ServicesDep, principal: Writer) -> Response:
    """Every link to the file made before now stops working (403 invalid_signature)."""
    await files.revoke_links(services, principal, file_id)
    return Response(status_code=204)


@router.delete(
    "/files/{file_id}",
    status_code=204,
    response_class=Response,
    responses=answers(FileNotFound),
    summary="Delete a file",
)
async def delete_file(
    file_id: str, services: ServicesDep, principal: Annotated[Principal, authorized("files:delete")]
) -> Response:
    """Delete the file's metadata and, when no other file shares them, its bytes."""
    await files.delete_file(services, principal, file_id)
    return Response(status_code=204)


@router.get(
    "/config",
    tags=["system"],
    response_model=None,
    responses=answers(ok=ClientConfig),
    summary="Limits a client needs",
)
async def client_config(
    services: ServicesDep, _principal: Annotated[Principal, authorized()]
) -> dict[str, Any]:
    """The upload size limit and the type policy."""
    settings = services.settings
    return {
        "maxUploadSize": settings.max_upload_size,
        "allowedTypes": list(settings.allowed_types),
        "blockedTypes": list(settings.blocked_types),
    }
