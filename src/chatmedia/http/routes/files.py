"""The native API: /v1/files and /v1/config."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from chatmedia.http.content import content_response
from chatmedia.http.deps import get_services, require_key
from chatmedia.http.forms import native_info, read_form
from chatmedia.http.jsonbody import json_body_doc, read_body, validate
from chatmedia.http.schemas import ExternalBody, ImportBody
from chatmedia.models import FileRecord
from chatmedia.pipelines import files
from chatmedia.pipelines.external import create_external_file
from chatmedia.pipelines.fetch import import_file
from chatmedia.pipelines.upload import store_file
from chatmedia.services import Services
from chatmedia.views import file_view

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], tags=["files"])
ServicesDep = Annotated[Services, Depends(get_services)]

UPLOAD_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "conversationId": {"type": "string"},
                        "name": {"type": "string", "description": "Overrides the filename"},
                        "properties": {"type": "string", "description": "A JSON object"},
                    },
                    "additionalProperties": {"type": "string"},
                }
            }
        },
    }
}


@router.post("/files", status_code=201, openapi_extra=UPLOAD_FORM, summary="Upload a file")
async def upload_file(request: Request, services: ServicesDep) -> JSONResponse:
    """Upload one file as multipart/form-data; other text parts become properties."""
    form = read_form(request)
    record = await store_file(services, form.file_chunks(), lambda: native_info(form))
    return _created(record, services)


@router.post(
    "/files/import",
    status_code=201,
    openapi_extra=json_body_doc(ImportBody),
    summary="Import a file from a URL",
)
async def import_from_url(request: Request, services: ServicesDep) -> JSONResponse:
    """The server fetches `sourceUrl` (with the channel's credentials, under the fetch
    policy) and stores it as if it had been uploaded."""
    body = validate(ImportBody, await read_body(request))
    return _created(await import_file(services, body.to_request()), services)


@router.post(
    "/files/external",
    status_code=201,
    openapi_extra=json_body_doc(ExternalBody),
    summary="Record a file kept elsewhere",
)
async def create_external(request: Request, services: ServicesDep) -> JSONResponse:
    """An EXTERNAL file: a reference whose content requests are redirected to its URL."""
    body = validate(ExternalBody, await read_body(request))
    return _created(await create_external_file(services, body.to_info()), services)


def _created(record: FileRecord, services: Services) -> JSONResponse:
    base = services.settings.public_url
    headers = {"Location": f"{base}/v1/files/{record.id}"}
    if record.sha256:
        headers["ETag"] = record.etag
    return JSONResponse(file_view(record, base), 201, headers)


@router.get("/files", summary="List files, newest first")
async def list_files(
    services: ServicesDep,
    conversation_id: Annotated[str | None, Query(alias="conversationId")] = None,
    limit: Annotated[int, Query(ge=1, le=files.MAX_PAGE_SIZE)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of files; pass `nextCursor` back as `cursor` for the next page."""
    page = await files.list_files(services, conversation_id, limit, cursor)
    base = services.settings.public_url
    return {"items": [file_view(r, base) for r in page.items], "nextCursor": page.next_cursor}


@router.get("/files/{file_id}", summary="A file's metadata")
async def get_file(file_id: str, services: ServicesDep) -> dict[str, Any]:
    """The File."""
    return file_view(await files.get_file(services, file_id), services.settings.public_url)


@router.get("/files/{file_id}/content", summary="A file's bytes", operation_id="getContent")
@router.head("/files/{file_id}/content", summary="A file's headers", operation_id="headContent")
async def get_content(file_id: str, request: Request, services: ServicesDep) -> Response:
    """The bytes, with Range (one range), ETag and conditional requests."""
    record = await files.get_file(services, file_id)
    return await content_response(request, record, services)


@router.delete("/files/{file_id}", status_code=204, summary="Delete a file")
async def delete_file(file_id: str, services: ServicesDep) -> Response:
    """Delete the file's metadata and, when no other file shares them, its bytes."""
    await files.delete_file(services, file_id)
    return Response(status_code=204)


@router.get("/config", tags=["system"], summary="Limits a client needs")
async def client_config(services: ServicesDep) -> dict[str, Any]:
    """The upload size limit and the type policy."""
    settings = services.settings
    return {
        "maxUploadSize": settings.max_upload_size,
        "allowedTypes": list(settings.allowed_types),
        "blockedTypes": list(settings.blocked_types),
    }
