"""The long-lived objects a running server shares: built once from the settings."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from chatmedia.access.links import Links
from chatmedia.access.usage import KeyUse
from chatmedia.bus import EventBus
from chatmedia.caching import ring
from chatmedia.caching.records import RecordCache
from chatmedia.config import Settings
from chatmedia.db import Database, DatabaseUnavailable
from chatmedia.egress.fetcher import Fetcher, Resolver, system_resolver
from chatmedia.egress.oauth import TokenCache
from chatmedia.fairuse import counters
from chatmedia.fairuse.counters import NodeCounters
from chatmedia.fairuse.limiter import Limiter
from chatmedia.media.sandbox import Sandbox, SandboxLimits
from chatmedia.scanning.scanner import Scanner
from chatmedia.storage import BlobStore, Closing, LocalPaths, Presigner, StoreUnavailable
from chatmedia.storage.local import LocalBlobStore

# What a backend that does not answer raises (answered 503 backend_unavailable).
BACKEND_OUTAGES: tuple[type[Exception], ...] = (DatabaseUnavailable, StoreUnavailable)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` is a backend outage, also when it comes as a group of them (a driver's
    tasks failing together as its connection goes)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(BACKEND_OUTAGES)[1] is None
    return isinstance(exc, BACKEND_OUTAGES)


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
    cache: RecordCache
    # Where media are decoded (chatmedia.media): never in this process.
    sandbox: Sandbox
    # Set when content requests are answered with a redirect to the store itself.
    presigner: Presigner | None = None
    # The store again when its blobs are files here, which the server can send itself.
    local_paths: LocalPaths | None = None
    # clamd, when every new file is scanned (CHATMEDIA_CLAMAV_URL).
    scanner: Scanner | None = None
    key_use: KeyUse = field(default_factory=KeyUse)

    async def close(self) -> None:
        """Release the database connections and the media processes."""
        self.sandbox.close()
        await self.db.close()
        if isinstance(self.store, Closing):
            await self.store.aclose()


def open_services(settings: Settings, resolver: Resolver = system_resolver) -> Services:
    """Connect the backends the settings name (no I/O happens until first use)."""
    fetcher = Fetcher(settings.fetch_policy, resolver)
    store = _open_store(settings)
    redirect = store if settings.s3_redirect_downloads and isinstance(store, Presigner) else None
    db = Database(settings.database_url)
    changes = ring.ChangeRing(_changes_path(db))
    # What this process commits reaches every process of the node before it answers.
    db.on_commit = changes.publish
    return Services(
        settings=settings,
        db=db,
        store=store,
        fetcher=fetcher,
        tokens=TokenCache(fetcher),
        bus=EventBus(),
        links=Links(settings.url_ttl, settings.public_url, settings.url_signing_keys),
        # The node's workers share their counters through the file the server names.
        limiter=Limiter(settings.limit_settings, NodeCounters(os.environ.get(counters.ENV_NAME))),
        # On PostgreSQL the other nodes' changes come by NOTIFY: trusted once listening.
        cache=RecordCache(changes, settings.cache_files, trusted=not db.is_postgresql),
        presigner=redirect,
        local_paths=store if isinstance(store, LocalPaths) else None,
        scanner=Scanner(url, settings.clamav_timeout) if (url := settings.clamav_url) else None,
        sandbox=_sandbox(settings),
    )


def _sandbox(settings: Settings) -> Sandbox:
    """The media sandbox (its processes start on first use)."""
    limits = SandboxLimits(
        memory_bytes=settings.media_memory,
        cpu_seconds=math.ceil(settings.media_timeout) + 1,
        timeout=settings.media_timeout,
    )
    return Sandbox(limits, settings.media_workers)


def _changes_path(db: Database) -> str | None:
    """Where the node's processes share their changes: beside a SQLite database (so that
    the command line's changes reach the server too), else in the file the server's main
    process names (a process started without it is its node's only one)."""
    database = db.url.database
    if not db.is_postgresql and database and database != ":memory:":
        return database + "-changes"
    return os.environ.get(ring.ENV_NAME)


def _open_store(settings: Settings) -> BlobStore:
    if settings.storage_url is None:
        return LocalBlobStore(settings.blob_dir)
    from chatmedia.storage.s3 import open_s3_store  # obstore: only for an S3 store

    return open_s3_store(settings.storage_url, os.environ)
