"""Backends the contract suites run against. Issue 6 adds S3 and PostgreSQL here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chatmedia.config import Settings, load_settings
from chatmedia.db import Database
from chatmedia.db.migrate import upgrade
from chatmedia.services import Services, open_services
from chatmedia.storage import BlobStore
from chatmedia.storage.local import LocalBlobStore
from tests.pgserver import PostgresServer, postgres

__all__ = ["postgres"]  # the session's server, for the fixtures below


@pytest.fixture(params=["local"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    assert request.param == "local"
    return LocalBlobStore(tmp_path / "blobs")


def _database_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = _database_url(request.param, request, tmp_path)
    db = Database(load_settings({"CHATMEDIA_DATABASE_URL": url}, cwd=tmp_path).database_url)
    await upgrade(db)
    yield db
    await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def services(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: Callable[..., Settings]
) -> AsyncIterator[Services]:
    url = _database_url(request.param, request, tmp_path)
    services = open_services(make_settings(max_upload_size="1MiB", database_url=url))
    await upgrade(services.db)
    yield services
    await services.close()
