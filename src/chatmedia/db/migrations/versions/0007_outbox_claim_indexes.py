"""The outbox's claim indexes: (status, event_seq) and (status, webhook_id, queue,
event_seq), in place of (status, next_attempt_at) and (webhook_id, queue, event_seq).

With them the claim reads the oldest pending deliveries in order and finds queue heads
with index seeks, never the deliveries already delivered (chatmedia.db.webhooks.Outbox);
the two indexes they replace served only the claim's former query.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deliveries_status_event_seq", "deliveries", ["status", "event_seq"])
    op.create_index(
        "ix_deliveries_status_webhook_id_queue_event_seq",
        "deliveries",
        ["status", "webhook_id", "queue", "event_seq"],
    )
    op.drop_index("ix_deliveries_webhook_id_queue_event_seq", "deliveries")
    op.drop_index("ix_deliveries_status_next_attempt_at", "deliveries")


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_deliveries_webhook_id_queue_event_seq",
        "deliveries",
        ["webhook_id", "queue", "event_seq"],
    )
    op.drop_index("ix_deliveries_status_webhook_id_queue_event_seq", "deliveries")
    op.drop_index("ix_deliveries_status_event_seq", "deliveries")
