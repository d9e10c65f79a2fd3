"""The long-lived objects a running server shares: built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from chatmedia.bus import EventBus
from chatmedia.config import Settings
from chatmedia.db import Database, DatabaseUnavailable
from chatmedia.egress.fetcher import Fetcher, Resolver, system_resolver
from chatmedia.egress.oauth import TokenCache
from chatmedia.storage import BlobStore
from chatmedia.storage.local import LocalBlobStore

# What a backend that does not answer raises (answered 503 backend_unavailable).
BACKEND_OUTAGES: tuple[type[Exception], ...] = (DatabaseUnavailable,)


@dataclass(frozen=True, slots=True)
class Services:
    """Settings, database, blob store, the fetcher and the event bus, handed to every
    workflow."""

    settings: Settings
    db: Database
    store: BlobStore
    fetcher: Fetcher
    tokens: TokenCache
    bus: EventBus

    async def close(self) -> None:
        """Release the database connections."""
        await self.db.close()


def open_services(settings: Settings, resolver: Resolver = system_resolver) -> Services:
    """Connect the backends the settings name (no I/O happens until first use)."""
    fetcher = Fetcher(settings.fetch_policy, resolver)
    return Services(
        settings=settings,
        db=Database(settings.database_url),
        store=LocalBlobStore(settings.blob_dir),
        fetcher=fetcher,
        tokens=TokenCache(fetcher),
        bus=EventBus(),
    )
