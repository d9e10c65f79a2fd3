"""The Hybrid Chat file-engine API, as existing connectors speak it.

Its published conventions differ from the native API's and are kept exactly: an upload
answers 200, and any mistake of the client's answers 404 (a server fault 500) with
`{"message": "An error occurred while uploading file.", "error": {...}}`. Downloads need
no key: the URL is what connectors put into a media message, fetched by providers that
cannot send one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect

from chatmedia.access.links import file_engine_resource
from chatmedia.access.principal import Principal
from chatmedia.errors import ChatMediaError, FileNotFound, FileNotReady
from chatmedia.http.content import content_response
from chatmedia.http.deps import (
    authorized,
    credential_check,
    get_services,
    request_principal,
    widget_or_authorized,
)
from chatmedia.http.forms import NOT_BLANK, compat_info, declared_length, read_form
from chatmedia.http.jsonbody import json_body_doc, read_body, validate
from chatmedia.http.openapi import answers
from chatmedia.http.routes.files import (
    CONTENT_ANSWERS,
    FORM_ERRORS,
    IDEMPOTENCY_KEY,
    IDEMPOTENT,
    IMPORT_ERRORS,
    TEXT_PART,
    UPLOAD_ERRORS,
    form_doc,
)
from chatmedia.http.schemas import FileEngineImportBody
from chatmedia.http.shapes import FileEngineError, FileEngineUpload, FileStat
from chatmedia.models import FileRecord
from chatmedia.pipelines.fetch import import_file
from chatmedia.pipelines.files import get_file_by_stored_name, linked_file
from chatmedia.pipelines.upload import store_file
from chatmedia.services import Services
from chatmedia.views import timestamp

log = logging.getLogger("chatmedia")
router = APIRouter(prefix="/file-engine/api", tags=["file-engine (compatibility)"])
ServicesDep = Annotated[Services, Depends(get_services)]
Writer = Annotated[Principal, authorized("files:write")]
Uploader = Annotated[Principal, widget_or_authorized("files:write")]
Filename = Annotated[str, Query(min_length=1, description="The file's stored name")]
UPLOAD_FAILED = "An error occurred while uploading file."


def _file_engine_answers(*errors: type[ChatMediaError]) -> dict[int | str, dict[str, Any]]:
    """200, and the errors in the file-engine's convention and shape: the client's as 404,
    the server's as 500. The Idempotency-Key checks answer before the route, as natively."""
    client = [e.code for e in errors if e.status < 500]
    server = [e.code for e in errors if e.status >= 500] + ["internal_error"]
    shape = {"model": FileEngineError}
    return answers(*IDEMPOTENT, ok=FileEngineUpload) | {
        404: {"description": ", ".join(dict.fromkeys(client)), **shape},
        500: {"description": ", ".join(dict.fromkeys(server)), **shape},
    }


@router.post(
    "/uploadFileStream",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": form_doc(
                {"conversationId": TEXT_PART | {"pattern": NOT_BLANK}},
                loose=True,
                required=("conversationId",),
            ),
        },
        "parameters": [IDEMPOTENCY_KEY],
    },
    response_model=None,
    responses=_file_engine_answers(*FORM_ERRORS, *UPLOAD_ERRORS),
    summary="Upload a file (parts: file, conversationId)",
)
async def upload_file_stream(
    request: Request, services: ServicesDep, principal: Uploader
) -> JSONResponse:
    """Stores the file as `<conversationId>_<filename>` (made unique when taken). With
    CHATMEDIA_COMPAT_UPLOAD=open, a request without a key is taken too (a customer
    widget's), into CHATMEDIA_COMPAT_UPLOAD_TENANT, from an allowed Origin only."""
    return await upload_answer(_upload(request, services, principal), services)


async def _upload(request: Request, services: Services, principal: Principal) -> FileRecord:
    form = read_form(request)
    return await store_file(
        services, principal, form.file_chunks(), lambda: compat_info(form), declared_length(request)
    )


async def upload_answer(upload: Awaitable[FileRecord], services: Services) -> JSONResponse:
    """Run an upload and answer in the file-engine's convention."""
    try:
        record = await upload
    except ChatMediaError as e:
        status = 500 if e.status >= 500 else 404
        return _upload_failed(status, {"code": e.code, "message": e.message})
    except ClientDisconnect:
        raise  # nobody to answer; not a fault of ours
    except Exception:
        log.exception("file-engine upload failed")
        return _upload_failed(500, {"code": "internal_error", "message": "server fault"})
    assert record.sha256 is not None
    body = {
        "message": "File uploaded successfully.",
        "etag": record.sha256,
        "name": record.stored_name,
        "type": record.content_type,
        "size": record.size,
    }
    body = _with_download_url(body, record, services)
    return JSONResponse(body, headers={"ETag": record.etag})


def _upload_failed(status: int, error: dict[str, str]) -> JSONResponse:
    return JSONResponse({"message": UPLOAD_FAILED, "error": error}, status_code=status)


_IMPORT_DOC = json_body_doc(FileEngineImportBody, IDEMPOTENCY_KEY)
# The same fields as a urlencoded form, where every value is text: `oauth` as a token or
# as the object's JSON.
_IMPORT_FORM = FileEngineImportBody.model_json_schema(by_alias=True)
_IMPORT_FORM["properties"]["oauth"] = _IMPORT_FORM["properties"]["oauth"]["anyOf"][2]
_IMPORT_FORM.pop("$defs")
_IMPORT_DOC["requestBody"]["content"]["application/x-www-form-urlencoded"] = {
    "schema": _IMPORT_FORM
}


@router.post(
    "/uploadFileFromUrl",
    openapi_extra=_IMPORT_DOC,
    response_model=None,
    responses=_file_engine_answers(*IMPORT_ERRORS),
    summary="Import a file from a URL (JSON or urlencoded form)",
)
async def upload_file_from_url(
    request: Request, services: ServicesDep, principal: Writer
) -> JSONResponse:
    """Stores the fetched file as `<conversationId>_<fileName>`, the name defaulting to the
    source's (Content-Disposition, else the URL's last segment)."""
    return await upload_answer(_import(request, services, principal), services)


async def _import(request: Request, services: Services, principal: Principal) -> FileRecord:
    body = validate(FileEngineImportBody, await read_body(request))
    return await import_file(services, principal, body.to_request())


@router.get(
    "/downloadFileStream",
    response_class=Response,
    responses=CONTENT_ANSWERS,
    summary="Download by name",
    operation_id="downloadFileStream",
)
@router.head(
    "/downloadFileStream",
    response_class=Response,
    responses=CONTENT_ANSWERS,
    summary="Headers by name",
    operation_id="headFileStream",
)
async def download_file_stream(
    request: Request, services: ServicesDep, filename: Filename
) -> Response:
    """The bytes, with the same Range and conditional semantics as the native API. By
    CHATMEDIA_COMPAT_DOWNLOAD: open to anyone who knows the name, only through a signed
    URL (the `url` the other routes then answer with), or with a key (files:read)."""
    mode = services.settings.compat_download
    if mode == "signed":
        params = QueryParams(request.scope["query_string"])
        with credential_check(services, request):
            grant = services.links.check(file_engine_resource(filename), params)
            record = await linked_file(services, grant, stored_name=filename)
        attachment = grant.disposition == "attachment"
        return await _engine_content(request, record, services, attachment)
    principal = None
    if mode == "key":
        principal = await request_principal(request)
        principal.require("files:read")
    else:  # open: anyone who knows the name, within the limit of their address
        services.limiter.admit_anonymous(request.scope)
    record = await get_file_by_stored_name(services, principal, filename)
    return await _engine_content(request, record, services)


async def _engine_content(
    request: Request, record: FileRecord, services: Services, attachment: bool = False
) -> Response:
    """The content, in the file-engine's convention: content not served yet (its scan is
    pending) is not found."""
    try:
        return await content_response(request, record, services, attachment=attachment)
    except FileNotReady:
        raise FileNotFound(f"no file named '{record.stored_name}'") from None


@router.get(
    "/getFileStat",
    response_model=None,
    responses=answers(FileNotFound, ok=FileStat),
    summary="A file's stat",
)
async def get_file_stat(
    services: ServicesDep,
    principal: Annotated[Principal, authorized("files:read")],
    filename: Filename,
) -> dict[str, Any]:
    """`{"name", "type", "size", "etag", "lastModified"}`."""
    record = await get_file_by_stored_name(services, principal, filename)
    stat = {
        "name": record.stored_name,
        "type": record.content_type,
        "size": record.size,
        "etag": record.sha256,  # null for an EXTERNAL file
        "lastModified": timestamp(record.created_at),
    }
    return _with_download_url(stat, record, services)


def _with_download_url(
    answer: dict[str, Any], record: FileRecord, services: Services
) -> dict[str, Any]:
    """With CHATMEDIA_COMPAT_DOWNLOAD=signed, the answer's `url`: a ready signed
    downloadFileStream URL (the name alone no longer downloads)."""
    if services.settings.compat_download != "signed" or record.sha256 is None:
        return answer
    return answer | {
        "url": services.links.file_engine_url(record.stored_name, record.link_generation)
    }
