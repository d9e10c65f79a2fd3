"""Deliveries by event: deleting events (pruning old ones, erasing a conversation) deletes
their deliveries first, and checks the foreign key from deliveries to events; both looked
for them by reading the whole table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deliveries_event_seq", "deliveries", ["event_seq"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_event_seq", "deliveries")
