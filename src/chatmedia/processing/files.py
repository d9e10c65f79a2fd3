"""What a change of a blob's derived state (its scan, its media) does to its files: each
is noted for the readers that cache it and told of with `file.updated`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from chatmedia.db.engine import Conn
from chatmedia.db.events import Events
from chatmedia.db.files import files_of_blob
from chatmedia.models import FileRecord
from chatmedia.views import file_view

UPDATED = "file.updated"


async def changed_files(
    conn: Conn, sha256: str, change: Callable[[FileRecord], FileRecord]
) -> list[FileRecord]:
    """In the caller's write transaction: the files of blob `sha256` as `change` makes
    them (each noted for the caches)."""
    return [change(record) for record in await files_of_blob(conn, sha256)]


async def tell_updated(conn: Conn, public_url: str, records: list[FileRecord]) -> None:
    """Log `file.updated` for each file, as it now is."""
    now = datetime.now(UTC)
    for record in records:
        data = file_view(record, public_url)
        await Events(conn, record.tenant).append(UPDATED, record.conversation_id, data, now)
