"""Erasure: idempotency answers name what they created, so that erasing a conversation
erases their replays too; and on SQLite, event ids that never go back (AUTOINCREMENT), so
that an event logged after the newest ones were erased is not given an id seen before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("resource", sa.Text, nullable=True))
        batch.create_index("ix_idempotency_keys_resource", ["resource"])
    if op.get_bind().dialect.name == "sqlite":  # PostgreSQL's sequences never go back
        with op.batch_alter_table(
            "events", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_index("ix_idempotency_keys_resource")
        batch.drop_column("resource")
