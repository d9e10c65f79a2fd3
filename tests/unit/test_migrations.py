"""Migrations keep what was there: keys made before scopes existed keep working, as admin
keys of the default tenant, and files stored before belong to the default tenant."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import sqlalchemy as sa
from alembic import command

from chatmedia.db import Database
from chatmedia.db.keys import Keys, hash_key
from chatmedia.db.migrate import _config
from chatmedia.pipelines.keys import principal_for

SECRET = "cm_made-before-scopes"


def test_keys_and_files_from_before_access_keep_working(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "0003")
        connection.execute(
            sa.text(
                "INSERT INTO api_keys (id, name, key_hash, prefix, created_at)"
                " VALUES ('key_old', 'old', :hash, 'cm_made-', :now)"
            ),
            {"hash": hash_key(SECRET), "now": now},
        )
        connection.execute(
            sa.text("INSERT INTO blobs (sha256, size, created_at) VALUES (:s, 1, :now)"),
            {"s": "a" * 64, "now": now},
        )
        connection.execute(
            sa.text(
                "INSERT INTO files (id, type, name, stored_name, content_type, size, sha256,"
                " conversation_id, properties, created_at) VALUES ('f1', 'HOSTED', 'a', 'c_a',"
                " 'image/png', 1, :s, 'c', '{}', :now)"
            ),
            {"s": "a" * 64, "now": now},
        )
        command.upgrade(_config(connection), "head")
        tenant = connection.scalar(sa.text("SELECT tenant FROM files WHERE id = 'f1'"))
        assert tenant == "default"
    engine.dispose()

    async def check() -> None:
        database = Database(url)
        async with database.read() as conn:
            key = await Keys(conn).authenticate(hash_key(SECRET))
        await database.close()
        assert key is not None
        principal = principal_for(key)
        assert principal.scopes == frozenset({"admin"})
        assert (principal.tenant, principal.conversations, principal.tenant_free) == (
            "default",
            None,
            True,
        )

    anyio.run(check)
