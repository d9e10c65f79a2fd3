"""The repositories' contract, run against every database."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from chatmedia.db import Database
from chatmedia.db.files import Files
from chatmedia.db.keys import Keys
from chatmedia.db.migrate import current_revision, head_revision
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
        await Files(conn).lock_blob(SHA, 3, NOW)
        await Files(conn).insert(record(1))
    async with database.read() as conn:
        files = Files(conn)
        assert await files.get("id1") == record(1)
        assert await files.get_by_stored_name("c1_f1.png") == record(1)
        assert await files.stored_name_taken("c1_f1.png")
        assert not await files.stored_name_taken("c1_f2.png")
        assert await files.get("missing") is None


async def test_stored_names_are_unique(database: Database) -> None:
    async with database.write() as conn:
        await Files(conn).lock_blob(SHA, 3, NOW)
        await Files(conn).insert(record(1))
    async with database.write() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            await Files(conn).insert(replace(record(2), stored_name="c1_f1.png"))


async def test_a_file_needs_its_blob_row(database: Database) -> None:
    async with database.write() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            await Files(conn).insert(record(1))


async def test_pages_are_newest_first_and_stable(database: Database) -> None:
    async with database.write() as conn:
        await Files(conn).lock_blob(SHA, 3, NOW)
        for n in range(5):
            await Files(conn).insert(record(n, "c1" if n % 2 == 0 else "c2"))
    async with database.read() as conn:
        first, cursor = await Files(conn).page(None, 2, None)
        assert [r.id for r in first] == ["id4", "id3"]
    async with database.write() as conn:  # a new file must not shift the next page
        await Files(conn).insert(record(9))
    async with database.read() as conn:
        files = Files(conn)
        second, cursor = await files.page(None, 2, cursor)
        assert [r.id for r in second] == ["id2", "id1"]
        third, cursor = await files.page(None, 2, cursor)
        assert [r.id for r in third] == ["id0"]
        assert cursor is None
        only_c1, _ = await files.page("c1", 10, None)
        assert [r.id for r in only_c1] == ["id9", "id4", "id2", "id0"]


async def test_blob_release_only_when_unreferenced(database: Database) -> None:
    async with database.write() as conn:
        await Files(conn).lock_blob(SHA, 3, NOW)
        await Files(conn).lock_blob(SHA, 3, NOW)  # a second upload of the same bytes
        await Files(conn).insert(record(1))
    async with database.write() as conn:
        assert not await Files(conn).release_blob(SHA)
        await Files(conn).delete("id1")
        assert await Files(conn).release_blob(SHA)
        assert not await Files(conn).release_blob(SHA)


async def test_expired_ids(database: Database) -> None:
    async with database.write() as conn:
        await Files(conn).lock_blob(SHA, 3, NOW)
        await Files(conn).insert(record(1, created=NOW - timedelta(days=40)))
        await Files(conn).insert(record(2, created=NOW - timedelta(days=10)))
    async with database.read() as conn:
        assert await Files(conn).expired_ids(NOW - timedelta(days=30), 10) == ["id1"]


async def test_keys(database: Database) -> None:
    async with database.write() as conn:
        key, secret = await Keys(conn).create("connector")
    assert secret.startswith("cm_")
    assert len(secret) > 40
    async with database.read() as conn:
        keys = Keys(conn)
        assert await keys.authenticate(secret) == key
        assert await keys.authenticate(secret + "x") is None
        assert await keys.count() == 1
    async with database.write() as conn:
        assert await Keys(conn).revoke(key.id)
        assert not await Keys(conn).revoke(key.id)
    async with database.read() as conn:
        assert await Keys(conn).authenticate(secret) is None
        [listed] = await Keys(conn).all()
        assert listed.revoked_at is not None
