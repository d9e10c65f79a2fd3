"""Newest-first pages by an insertion-order column, for every listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from chatmedia.db.engine import Conn


@dataclass(frozen=True, slots=True)
class Conversations:
    """Which conversations a listing covers: `only` one (or none: None), and within the
    patterns of a restriction (exact ids and `prefix*`; None: any)."""

    only: str | None = None
    patterns: tuple[str, ...] | None = None

    def clause(self, column: sa.ColumnElement[str | None]) -> sa.ColumnElement[bool]:
        """The condition on a conversation_id column."""
        clauses: list[sa.ColumnElement[bool]] = []
        if self.only is not None:
            clauses.append(column == self.only)
        if self.patterns is not None:
            allowed = [
                column.startswith(p[:-1], autoescape=True) if p.endswith("*") else column == p
                for p in self.patterns
            ]
            clauses.append(sa.or_(sa.false(), *allowed))
        return sa.and_(sa.true(), *clauses)


async def newest_first(
    conn: Conn,
    query: sa.Select[Any],
    seq: sa.ColumnElement[int],
    limit: int,
    before: int | None,
) -> tuple[list[sa.Row[Any]], int | None]:
    """Up to `limit` rows of `query`, newest first by `seq`, older than `before` when
    given; and the seq to continue from, or None on the last page (one extra row is read
    to know)."""
    query = query.order_by(seq.desc()).limit(limit + 1)
    if before is not None:
        query = query.where(seq < before)
    rows = list((await conn.execute(query)).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, int(rows[-1]._mapping[seq])
