"""Applying and checking the Alembic migrations, on the app's own connections.

Alembic is imported only to migrate: every server worker checks the schema at start, and
importing Alembic (with Mako) there would cost each worker about 10 MiB for nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from chatmedia.db.engine import Database
from chatmedia.db.schema import SCHEMA_REVISION

if TYPE_CHECKING:
    from alembic.config import Config

_VERSION = sa.table("alembic_version", sa.column("version_num"))


class SchemaBehind(Exception):
    """The database lacks migrations this version needs."""


def _config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: sa.Connection) -> None:
    from alembic import command

    command.upgrade(_config(connection), "head")


def _current(connection: sa.Connection) -> str | None:
    if not sa.inspect(connection).has_table(_VERSION.name):
        return None
    version: str | None = connection.scalar(sa.select(_VERSION.c.version_num))
    return version


def head_revision() -> str:
    """The newest migration shipped with this version, as Alembic sees it."""
    from alembic.script import ScriptDirectory

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


async def ensure_schema(db: Database) -> None:
    """Make sure the schema is current. The embedded SQLite database is migrated in place;
    any other database must be migrated with `chatmedia migrate` first."""
    if await current_revision(db) == SCHEMA_REVISION:
        return
    if not db.is_postgresql:
        await upgrade(db)
        return
    raise SchemaBehind("the database schema is behind this version: run `chatmedia migrate`")
