"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatmedia.db import Database
from chatmedia.db.migrate import upgrade


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database in the test's folder."""
    database = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    await upgrade(database)
    yield database
    await database.close()
