"""Newest-first pages by an insertion-order column, for every listing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from chatmedia.db.engine import Conn


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
