"""Which database errors are outages (answered 503) and which are the caller's."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from chatmedia.db import DatabaseUnavailable
from chatmedia.db.engine import _translate


class _ServerError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("57P03", "the database system is shutting down"),
        ("57P01", "terminating connection due to administrator command"),
        ("08006", "connection failure"),
    ],
)
def test_a_server_that_refuses_or_drops_connections_is_unavailable(
    sqlstate: str, message: str
) -> None:
    error = sa.exc.DBAPIError("connect", None, _ServerError(message, sqlstate))
    translated = _translate(error)
    assert isinstance(translated, DatabaseUnavailable)
    assert message not in str(translated)


def test_other_errors_are_the_callers() -> None:
    error = sa.exc.IntegrityError("INSERT", None, _ServerError("duplicate key", "23505"))
    assert _translate(error) is error
    cancelled = sa.exc.DBAPIError("SELECT", None, _ServerError("canceled", "57014"))
    assert _translate(cancelled) is cancelled
