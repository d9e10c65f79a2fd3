"""The long-lived objects a running server shares: built once from the settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from chatmedia.access.links import Links
from chatmedia.access.usage import KeyUse
from chatmedia.bus import EventBus
from chatmedia.config import Settings
from chatmedia.db import Database, DatabaseUnavailable
from chatmedia.egress.fetcher import Fetcher, Resolver, system_resolver
from chatmedia.egress.oauth import TokenCache
from chatmedia.fairuse.counters import ENV_NAME, NodeCounters
from chatmedia.fairuse.limiter import Limiter
from chatmedia.storage import BlobStore, LocalPaths, Presigner, StoreUnavailable
from chatmedia.storage.local import LocalBlobStore

# What a backend that does not answer raises (answered 503 backend_unavailable).
BACKEND_OUTAGES: tuple[type[Exception], ...] = (DatabaseUnavailable, StoreUnavailable)


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
    links: Links
    limiter: Limiter
    # Set when content requests are answered with a redirect to the store itself.
    presigner: Presigner | None = None
    # The store again when its blobs are files here, which the server can send itself.
    local_paths: LocalPaths | None = None
    key_use: KeyUse = field(default_factory=KeyUse)

    async def close(self) -> None:
        """Release the database connections."""
        await self.db.close()


def open_services(settings: Settings, resolver: Resolver = system_resolver) -> Services:
    """Connect the backends the settings name (no I/O happens until first use)."""
    fetcher = Fetcher(settings.fetch_policy, resolver)
    store = _open_store(settings)
    redirect = store if settings.s3_redirect_downloads and isinstance(store, Presigner) else None
    return Services(
        settings=settings,
        db=Database(settings.database_url),
        store=store,
        fetcher=fetcher,
        tokens=TokenCache(fetcher),
        bus=EventBus(),
        links=Links(settings.url_ttl, settings.public_url, settings.url_signing_keys),
        # The node's workers share their counters through the file the server names.
        limiter=Limiter(settings.limit_settings, NodeCounters(os.environ.get(ENV_NAME))),
        presigner=redirect,
        local_paths=store if isinstance(store, LocalPaths) else None,
    )


def _open_store(settings: Settings) -> BlobStore:
    if settings.storage_url is None:
        return LocalBlobStore(settings.blob_dir)
    from chatmedia.storage.s3 import open_s3_store  # obstore: only for an S3 store

    return open_s3_store(settings.storage_url, os.environ)
