"""Resumable uploads over tus 1.0 (chatmedia.uploads): thin routes that read the tus
headers, make one call and answer with the tus headers."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from chatmedia.access.principal import Principal
from chatmedia.errors import (
    ChecksumMismatch,
    ConversationNotAllowed,
    FileNotReady,
    FileTooLarge,
    InvalidUploadHeader,
    MalwareDetected,
    QuotaExceeded,
    TusVersionUnsupported,
    UnsupportedMediaType,
    UploadExpired,
    UploadLocked,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadTooFragmented,
    UploadTypeInvalid,
)
from chatmedia.http.deps import authorized, get_services
from chatmedia.http.openapi import answers
from chatmedia.services import Services
from chatmedia.uploads import protocol
from chatmedia.uploads.workflow import Written, create_upload, terminate, upload_state, write

router = APIRouter(prefix="/v1", tags=["uploads (tus)"])
ServicesDep = Annotated[Services, Depends(get_services)]
Writer = Annotated[Principal, authorized("files:write")]
_TUS = {"Tus-Resumable": protocol.TUS_VERSION}
# Every tus request but OPTIONS carries it (412 without, as tus has it).
_TUS_HEADER: dict[str, Any] = {
    "name": "Tus-Resumable", "in": "header", "required": True,
    "schema": {"type": "string", "enum": [protocol.TUS_VERSION]},
}  # fmt: skip
_BYTES = {protocol.PATCH_TYPE: {"schema": {"type": "string", "format": "binary"}}}


def _header(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": schema}


_NUMBER = {"type": "integer", "minimum": 0}
# Creation takes one of Upload-Length and Upload-Defer-Length (400 otherwise).
_CREATION_HEADERS = [
    _TUS_HEADER, _header("Upload-Length", _NUMBER),
    _header("Upload-Defer-Length", {"type": "string", "enum": ["1"]}),
    _header("Upload-Metadata", {"type": "string"}), _header("Upload-Checksum", {"type": "string"}),
]  # fmt: skip
_PATCH_HEADERS = [
    _TUS_HEADER, _header("Upload-Offset", _NUMBER, required=True),
    _header("Upload-Length", _NUMBER), _header("Upload-Checksum", {"type": "string"}),
]  # fmt: skip
_LOCATION = {"Location": {"schema": {"type": "string"}}}
_COMMON = (TusVersionUnsupported, InvalidUploadHeader, UploadNotFound, UploadExpired)
_WRITE = (
    UploadOffsetMismatch, UploadLocked, FileTooLarge, UploadTypeInvalid, UnsupportedMediaType,
    ChecksumMismatch, MalwareDetected, QuotaExceeded, ConversationNotAllowed, UploadTooFragmented,
)  # fmt: skip


@router.options(
    "/uploads", status_code=204, response_class=Response, summary="What the tus server speaks"
)
async def discover(services: ServicesDep) -> Response:
    """Tus-Version, Tus-Extension, Tus-Max-Size and Tus-Checksum-Algorithm (no key)."""
    return Response(
        status_code=204,
        headers=_TUS
        | {
            "Tus-Version": protocol.TUS_VERSION,
            "Tus-Extension": ",".join(protocol.EXTENSIONS),
            "Tus-Max-Size": str(services.settings.max_upload_size),
            "Tus-Checksum-Algorithm": ",".join(protocol.CHECKSUM_ALGORITHMS),
        },
    )


@router.post(
    "/uploads",
    status_code=201,
    response_class=Response,
    responses=answers(
        *_COMMON, *_WRITE, status=201, headers={"Location": {"schema": {"type": "string"}}}
    ),
    # The first bytes may come along (application/offset+octet-stream, no longer than
    # Upload-Length): left out of the document, which cannot relate a body to a header.
    openapi_extra={"parameters": _CREATION_HEADERS},
    summary="Start a resumable upload (creation, creation-with-upload)",
)
async def create(request: Request, services: ServicesDep, principal: Writer) -> Response:
    """Upload-Length (or Upload-Defer-Length: 1) and Upload-Metadata (`filename`,
    `filetype`, `conversationId`, and any other pairs, kept as properties); a body of
    type application/offset+octet-stream is the first bytes. `Location` is the upload's
    URL; its id is the File's to be."""
    headers = request.headers
    protocol.check_version(headers)
    length = protocol.creation_length(headers)
    pairs = protocol.metadata(headers)
    body = request.stream() if headers.get("content-type") == protocol.PATCH_TYPE else None
    written = await create_upload(
        services, principal, length, pairs, body, protocol.checksum(headers)
    )
    location = f"{services.settings.public_url}/v1/uploads/{written.upload.id}"
    return _answer(201, written, services, {"Location": location})


@router.head(
    "/uploads/{upload_id}",
    response_class=Response,
    responses=answers(*_COMMON),
    openapi_extra={"parameters": [_TUS_HEADER]},
    summary="Where a resumable upload is",
)
async def look(
    upload_id: str, request: Request, services: ServicesDep, principal: Writer
) -> Response:
    """Upload-Offset, Upload-Length (or Upload-Defer-Length: 1), Upload-Metadata."""
    protocol.check_version(request.headers)
    written = await upload_state(services, principal, upload_id)
    upload = written.upload
    pairs = {k: str(v) for k, v in upload.properties.items()}
    pairs |= {"filename": upload.name} if upload.name else {}
    pairs |= {"conversationId": upload.conversation_id} if upload.conversation_id else {}
    headers = {"Cache-Control": "no-store", "Upload-Metadata": protocol.encode_metadata(pairs)}
    return _answer(200, written, services, headers)


@router.patch(
    "/uploads/{upload_id}",
    status_code=204,
    response_class=Response,
    responses=answers(*_COMMON, *_WRITE, FileNotReady, status=204),
    openapi_extra={
        "parameters": _PATCH_HEADERS,
        "requestBody": {"required": True, "content": _BYTES},
    },
    summary="Add bytes to a resumable upload",
)
async def patch(
    upload_id: str, request: Request, services: ServicesDep, principal: Writer
) -> Response:
    """The bytes (application/offset+octet-stream) at Upload-Offset, checked against
    Upload-Checksum when sent. The answer to the last byte carries the File's
    `Location`."""
    headers = request.headers
    protocol.check_version(headers)
    if headers.get("content-type") != protocol.PATCH_TYPE:
        raise UploadTypeInvalid(f"a PATCH's Content-Type is {protocol.PATCH_TYPE}")
    offset = protocol.number(headers, "Upload-Offset")
    if offset is None:
        raise InvalidUploadHeader("send Upload-Offset")
    length = protocol.number(headers, "Upload-Length")
    written = await write(
        services, principal, upload_id, offset, request.stream(), protocol.checksum(headers), length
    )
    extra = {}
    if written.file is not None:
        extra["Location"] = f"{services.settings.public_url}/v1/files/{written.file.id}"
    return _answer(204, written, services, extra)


@router.delete(
    "/uploads/{upload_id}",
    status_code=204,
    response_class=Response,
    responses=answers(*_COMMON, status=204),
    openapi_extra={"parameters": [_TUS_HEADER]},
    summary="End a resumable upload (termination)",
)
async def end(
    upload_id: str, request: Request, services: ServicesDep, principal: Writer
) -> Response:
    """Its bytes are dropped."""
    protocol.check_version(request.headers)
    await terminate(services, principal, upload_id)
    return Response(status_code=204, headers=_TUS)


def _answer(status: int, written: Written, services: Services, extra: dict[str, str]) -> Response:
    upload = written.upload
    headers = _TUS | {"Upload-Offset": str(upload.offset)} | extra
    if upload.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.length)
    if written.file is None:
        headers["Upload-Expires"] = format_datetime(upload.expires_at, usegmt=True)
    return Response(status_code=status, headers=headers)
