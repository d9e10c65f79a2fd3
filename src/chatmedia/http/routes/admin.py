"""What admins do with what the scanner found (chatmedia.pipelines.quarantine)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from chatmedia.access.principal import Principal
from chatmedia.errors import BadRequest, FileNotFound, InvalidCursor
from chatmedia.http.deps import authorized, get_services
from chatmedia.http.openapi import answers
from chatmedia.http.routes.files import CURSOR
from chatmedia.http.shapes import File, QuarantinePage
from chatmedia.models import QuarantineEntry
from chatmedia.pipelines import quarantine
from chatmedia.services import Services
from chatmedia.views import file_view, timestamp

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ServicesDep = Annotated[Services, Depends(get_services)]
Admin = Annotated[Principal, authorized("admin")]


def entry_view(entry: QuarantineEntry) -> dict[str, Any]:
    """A quarantine record as the API shows it."""
    return {
        "id": str(entry.seq),
        "sha256": entry.sha256,
        "size": entry.size,
        "signature": entry.signature,
        "tenant": entry.tenant,
        "keyId": entry.key_id,
        "fileId": entry.file_id,
        "bytesKept": entry.blob_kept,
        "detectedAt": timestamp(entry.detected_at),
        "releasedAt": timestamp(entry.released_at) if entry.released_at else None,
        "releasedBy": entry.released_by,
    }


@router.get(
    "/quarantine",
    response_model=None,
    responses=answers(InvalidCursor, ok=QuarantinePage),
    summary="What the scanner found, newest first",
)
async def list_quarantine(
    services: ServicesDep,
    principal: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, CURSOR] = None,
) -> dict[str, Any]:
    """Uploads refused as infected and files found infected later, of the key's tenant (an
    admin key without a tenant of its own: of every tenant)."""
    entries, next_cursor = await quarantine.list_quarantine(services, principal, limit, cursor)
    return {"items": [entry_view(e) for e in entries], "nextCursor": next_cursor}


@router.post(
    "/files/{file_id}/rescan",
    status_code=202,
    response_model=None,
    responses=answers(FileNotFound, BadRequest, ok=File, status=202),
    summary="Scan a file again",
)
async def rescan_file(file_id: str, services: ServicesDep, principal: Admin) -> JSONResponse:
    """Queues a scan of the file's bytes ahead of other work; the result comes as a
    `file.updated` or `file.quarantined` event."""
    record = await quarantine.rescan_file(services, principal, file_id)
    return JSONResponse(file_view(record, services.settings.public_url, services.links), 202)


@router.post(
    "/files/{file_id}/release",
    response_model=None,
    responses=answers(FileNotFound, BadRequest, ok=File),
    summary="Release a quarantined file",
)
async def release_file(file_id: str, services: ServicesDep, principal: Admin) -> dict[str, Any]:
    """An admin's override, audited: a file found infected (or whose scan failed) is served
    as clean, with every file of the same bytes."""
    record = await quarantine.release_file(services, principal, file_id)
    return file_view(record, services.settings.public_url, services.links)
