"""Access: scoped, expiring keys restricted to tenants and conversations; a tenant on
every file, message, event and webhook; a link generation per file.

Keys made before keep working as admin keys of the default tenant; everything stored
before belongs to the default tenant.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _tenant() -> sa.Column[str]:
    return sa.Column("tenant", sa.String(64), nullable=False, server_default="default")


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", sa.JSON, nullable=False, server_default='["admin"]'))
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=True))
        batch.add_column(sa.Column("conversations", sa.JSON, nullable=True))
        batch.add_column(sa.Column("expires_at", _TS, nullable=True))
        batch.add_column(sa.Column("last_used_at", _TS, nullable=True))
    with op.batch_alter_table("files") as batch:
        batch.add_column(_tenant())
        batch.add_column(
            sa.Column("link_generation", sa.Integer, nullable=False, server_default="0")
        )
        batch.drop_index("ix_files_conversation_id_seq")
        batch.create_index(
            "ix_files_tenant_conversation_id_seq", ["tenant", "conversation_id", "seq"]
        )
        batch.create_index("ix_files_tenant_seq", ["tenant", "seq"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(_tenant())
        batch.drop_index("ix_messages_conversation_id_seq")
        batch.create_index(
            "ix_messages_tenant_conversation_id_seq", ["tenant", "conversation_id", "seq"]
        )
    with op.batch_alter_table("events") as batch:
        batch.add_column(_tenant())
        batch.drop_index("ix_events_conversation_id_seq")
        batch.create_index(
            "ix_events_tenant_conversation_id_seq", ["tenant", "conversation_id", "seq"]
        )
        batch.create_index("ix_events_tenant_seq", ["tenant", "seq"])
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(_tenant())
        batch.create_index("ix_webhooks_tenant", ["tenant"])


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_index("ix_webhooks_tenant")
        batch.drop_column("tenant")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_tenant_seq")
        batch.drop_index("ix_events_tenant_conversation_id_seq")
        batch.create_index("ix_events_conversation_id_seq", ["conversation_id", "seq"])
        batch.drop_column("tenant")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_tenant_conversation_id_seq")
        batch.create_index("ix_messages_conversation_id_seq", ["conversation_id", "seq"])
        batch.drop_column("tenant")
    with op.batch_alter_table("files") as batch:
        batch.drop_index("ix_files_tenant_seq")
        batch.drop_index("ix_files_tenant_conversation_id_seq")
        batch.create_index("ix_files_conversation_id_seq", ["conversation_id", "seq"])
        batch.drop_column("link_generation")
        batch.drop_column("tenant")
    with op.batch_alter_table("api_keys") as batch:
        for column in ("last_used_at", "expires_at", "conversations", "tenant", "scopes"):
            batch.drop_column(column)
