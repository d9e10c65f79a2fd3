"""Backends the contract suites run against: SQLite and local disk, PostgreSQL and S3."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chatmedia.config import Settings, load_settings
from chatmedia.db import Database
from chatmedia.db.migrate import upgrade
from chatmedia.services import Services, open_services
from chatmedia.storage import BlobStore
from chatmedia.storage.local import LocalBlobStore
from chatmedia.storage.s3 import open_s3_store
from tests.pgserver import PostgresServer, postgres
from tests.s3server import S3Server, s3_server

__all__ = ["postgres", "s3_server"]  # the session's servers, for the fixtures below


@pytest.fixture(params=["local", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    server: S3Server = request.getfixturevalue("s3_server")
    return open_s3_store(server.url(f"t-{secrets.token_hex(6)}"), {})  # a prefix per test


@pytest.fixture
def fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors os.fdatasync is called on while the test runs (it still syncs)."""
    called: list[int] = []
    fdatasync = os.fdatasync

    def counted(fd: int) -> None:
        called.append(fd)
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", counted)
    return called


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


@pytest.fixture(params=["sqlite+local", "postgresql+s3"])
async def services(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: Callable[..., Settings]
) -> AsyncIterator[Services]:
    """The embedded default, and the scale-out pair."""
    settings = {"max_upload_size": "1MiB"}
    if request.param == "postgresql+s3":
        settings["database_url"] = _database_url("postgresql", request, tmp_path)
        s3: S3Server = request.getfixturevalue("s3_server")
        settings["storage_url"] = s3.url(f"t-{secrets.token_hex(6)}")
    services = open_services(make_settings(**settings))
    await upgrade(services.db)
    yield services
    await services.close()
