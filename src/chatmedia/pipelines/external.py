"""EXTERNAL files: references to files kept elsewhere (ChatKitty's external files). The
server stores the reference, never fetches it, and redirects downloads to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chatmedia.access.principal import Principal
from chatmedia.db.engine import Conn
from chatmedia.db.usage import Usage
from chatmedia.egress.urls import parse_source_url
from chatmedia.errors import BadRequest, UnsupportedMediaType
from chatmedia.fairuse.quotas import admit_reference
from chatmedia.mediatypes import declared_type
from chatmedia.models import FileRecord
from chatmedia.naming import sanitize_name, stored_name
from chatmedia.pipelines.upload import insert_file, log_file_event, new_file_id
from chatmedia.services import Services
from chatmedia.units import MAX_SIZE


@dataclass(frozen=True, slots=True)
class ExternalInfo:
    """What a client says of a file kept elsewhere."""

    url: str
    content_type: str
    size: int
    name: str | None = None
    conversation_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


async def create_external_file(
    services: Services, principal: Principal, info: ExternalInfo
) -> FileRecord:
    """Record a reference to a file kept elsewhere (see `add_external_file`)."""
    principal.check_create(info.conversation_id)
    async with services.db.write() as conn:
        record = await add_external_file(conn, services, info, principal.tenant)
    services.bus.notify()
    return record


async def add_external_file(
    conn: Conn, services: Services, info: ExternalInfo, tenant: str
) -> FileRecord:
    """In the caller's write transaction: check a reference, add it to `tenant`, log
    `file.created`.
    Its type must be a valid MIME type the type policy allows (the declared type: there are
    no bytes to look at); its size from 0 to 2**63-1."""
    # 1. Check what the client says.
    url = parse_source_url(info.url)
    content_type = declared_type(info.content_type)
    if content_type is None:
        raise BadRequest("contentType must be a MIME type such as image/png")
    if not services.settings.type_policy.permits(content_type):
        raise UnsupportedMediaType(f"files of type {content_type} are not allowed")
    if isinstance(info.size, bool) or not 0 <= info.size <= MAX_SIZE:
        raise BadRequest("size must be an integer from 0 to 2**63-1")
    name = sanitize_name(info.name or url.url.path.rsplit("/", 1)[-1])
    # 2. Record it under a unique stored name, within the tenant's quota of files, and log
    #    its event.
    now = datetime.now(UTC)
    record = FileRecord(
        id=new_file_id(),
        type="EXTERNAL",
        name=name,
        stored_name=stored_name(info.conversation_id, name),
        content_type=content_type,
        size=info.size,
        sha256=None,
        conversation_id=info.conversation_id,
        properties=dict(info.properties),
        created_at=now,
        tenant=tenant,
        url=str(url.url),
    )
    record = await insert_file(conn, record)
    await admit_reference(conn, services, tenant)
    await Usage(conn).count_file(record)
    await log_file_event(conn, services, "file.created", record, now)
    return record
