"""The repositories' contract, run against every database."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from chatmedia.access.principal import DEFAULT_TENANT
from chatmedia.db import Database
from chatmedia.db.files import Files, expired_files
from chatmedia.db.keys import Keys, hash_key
from chatmedia.db.migrate import current_revision, head_revision
from chatmedia.db.pages import Conversations
from chatmedia.db.schema import SCHEMA_REVISION, metadata
from chatmedia.models import FileRecord

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SHA = "a" * 64


def record(n: int, conversation: str | None = "c1", created: datetime = NOW) -> FileRecord:
    return FileRecord(
        id=f"id{n}",
        type="HOSTED",
        name=f"f{n}.png",
        stored_name=f"{conversation}_f{n}.png",
        content_type="image/png",
        size=3,
        sha256=SHA,
        conversation_id=conversation,
        properties={"n": n, "nested": {"ok": True}},
        created_at=created,
        tenant=DEFAULT_TENANT,
    )


async def test_schema_revision_is_the_newest_migration(database: Database) -> None:
    assert head_revision() == SCHEMA_REVISION
    assert await current_revision(database) == SCHEMA_REVISION


async def test_migrations_create_the_schema(database: Database) -> None:
    def diff(conn: sa.Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with database.read() as conn:
        assert await conn.run_sync(diff) == []


async def test_insert_and_read_back(database: Database) -> None:
    async with database.write() as conn:
        await Files(conn, DEFAULT_TENANT).lock_blob(SHA, 3, NOW)
        await Files(conn, DEFAULT_TENANT).insert(record(1))
    async with database.read() as conn:
        files = Files(conn, DEFAULT_TENANT)
        assert await files.get("id1") == record(1)
        assert await files.get_by_stored_name("c1_f1.png") == record(1)
        assert await files.get("missing") is None


async def test_stored_names_are_unique(database: Database) -> None:
    async with database.write() as conn:
        await Files(conn, DEFAULT_TENANT).lock_blob(SHA, 3, NOW)
        assert await Files(conn, DEFAULT_TENANT).insert(record(1))
    async with database.write() as conn:
        taken = replace(record(2), stored_name="c1_f1.png")
        assert not await Files(conn, DEFAULT_TENANT).insert(taken)  # nothing added
        assert await Files(conn, DEFAULT_TENANT).get("id2") is None


async def test_a_file_needs_its_blob_row(database: Database) -> None:
    async with database.write() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            await Files(conn, DEFAULT_TENANT).insert(record(1))


async def test_pages_are_newest_first_and_stable(database: Database) -> None:
    async with database.write() as conn:
        await Files(conn, DEFAULT_TENANT).lock_blob(SHA, 3, NOW)
        for n in range(5):
            await Files(conn, DEFAULT_TENANT).insert(record(n, "c1" if n % 2 == 0 else "c2"))
    async with database.read() as conn:
        first, cursor = await Files(conn, DEFAULT_TENANT).page(Conversations(), 2, None)
        assert [r.id for r in first] == ["id4", "id3"]
    async with database.write() as conn:  # a new file must not shift the next page
        await Files(conn, DEFAULT_TENANT).insert(record(9))
    async with database.read() as conn:
        files = Files(conn, DEFAULT_TENANT)
        second, cursor = await files.page(Conversations(), 2, cursor)
        assert [r.id for r in second] == ["id2", "id1"]
        third, cursor = await files.page(Conversations(), 2, cursor)
        assert [r.id for r in third] == ["id0"]
        assert cursor is None
        only_c1, _ = await files.page(Conversations(only="c1"), 10, None)
        assert [r.id for r in only_c1] == ["id9", "id4", "id2", "id0"]


async def test_blob_release_only_when_unreferenced(database: Database) -> None:
    async with database.write() as conn:
        await Files(conn, DEFAULT_TENANT).lock_blob(SHA, 3, NOW)
        await Files(conn, DEFAULT_TENANT).lock_blob(
            SHA, 3, NOW
        )  # a second upload of the same bytes
        await Files(conn, DEFAULT_TENANT).insert(record(1))
    async with database.write() as conn:
        assert not await Files(conn, DEFAULT_TENANT).release_blob(SHA)
        await Files(conn, DEFAULT_TENANT).delete("id1")
        assert await Files(conn, DEFAULT_TENANT).release_blob(SHA)
        assert not await Files(conn, DEFAULT_TENANT).release_blob(SHA)


async def test_expired_ids(database: Database) -> None:
    async with database.write() as conn:
        await Files(conn, DEFAULT_TENANT).lock_blob(SHA, 3, NOW)
        await Files(conn, DEFAULT_TENANT).insert(record(1, created=NOW - timedelta(days=40)))
        await Files(conn, DEFAULT_TENANT).insert(record(2, created=NOW - timedelta(days=10)))
    async with database.read() as conn:
        expired = await expired_files(conn, NOW - timedelta(days=30), 10)
    assert [r.id for r in expired] == ["id1"]


async def test_keys(database: Database) -> None:
    async with database.write() as conn:
        key, secret = await Keys(conn).create("connector")
    assert secret.startswith("cm_")
    assert len(secret) > 40
    async with database.read() as conn:
        keys = Keys(conn)
        found = await keys.authenticate(hash_key(secret))
        assert found is not None
        assert (found.id, found.name, found.scopes, found.tenant) == (
            key.id, key.name, ("admin",), None,
        )  # fmt: skip
        assert (found.conversations, found.expires_at) == (None, None)
        assert await keys.authenticate(hash_key(secret + "x")) is None
        assert await keys.count() == 1
    async with database.write() as conn:
        assert await Keys(conn).revoke(key.id)
        assert not await Keys(conn).revoke(key.id)
    async with database.read() as conn:
        assert await Keys(conn).authenticate(hash_key(secret)) is None
        [listed] = await Keys(conn).all()
        assert listed.revoked_at is not None
