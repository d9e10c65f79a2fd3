"""Backends the contract suites run against. Issue 6 adds S3 and PostgreSQL here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chatmedia.config import Settings
from chatmedia.db import Database
from chatmedia.db.migrate import upgrade
from chatmedia.services import Services, open_services
from chatmedia.storage import BlobStore
from chatmedia.storage.local import LocalBlobStore


@pytest.fixture(params=["local"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    assert request.param == "local"
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture(params=["sqlite"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    assert request.param == "sqlite"
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}")
    await upgrade(db)
    yield db
    await db.close()


@pytest.fixture
async def services(make_settings: Callable[..., Settings]) -> AsyncIterator[Services]:
    services = open_services(make_settings(max_upload_size="1MiB"))
    await upgrade(services.db)
    yield services
    await services.close()
