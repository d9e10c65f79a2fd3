"""Applying and checking the Alembic migrations, on the app's own async engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from chatmedia.db.engine import Database


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(_config(connection), "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest migration shipped with this version."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(db: Database) -> None:
    """Apply every migration the database lacks."""
    async with db.write() as conn:
        await conn.run_sync(_upgrade)


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None for an empty database."""
    async with db.read() as conn:
        return await conn.run_sync(_current)


class SchemaBehind(Exception):
    """The database lacks migrations this version needs."""


async def ensure_schema(db: Database) -> None:
    """Make sure the schema is current. The embedded SQLite database is migrated in place;
    any other database must be migrated with `chatmedia migrate` first."""
    if await current_revision(db) == head_revision():
        return
    if db.url.get_backend_name() == "sqlite":
        await upgrade(db)
        return
    raise SchemaBehind("the database schema is behind this version: run `chatmedia migrate`")
