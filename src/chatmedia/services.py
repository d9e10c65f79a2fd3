"""The long-lived objects a running server shares: built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from chatmedia.config import Settings
from chatmedia.db import Database
from chatmedia.storage import BlobStore
from chatmedia.storage.local import LocalBlobStore


@dataclass(frozen=True, slots=True)
class Services:
    """Settings, database and blob store, handed to every workflow."""

    settings: Settings
    db: Database
    store: BlobStore

    async def close(self) -> None:
        """Release the database connections."""
        await self.db.close()


def open_services(settings: Settings) -> Services:
    """Connect the backends the settings name (no I/O happens until first use)."""
    return Services(
        settings=settings,
        db=Database(settings.database_url),
        store=LocalBlobStore(settings.blob_dir),
    )
