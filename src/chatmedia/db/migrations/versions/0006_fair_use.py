"""Fair use: a key's own request rate, each tenant's quotas, its usage and the
reservations of its uploads under way.

The usage of every tenant is counted from the files stored before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("rate_limit", sa.String(32), nullable=True))
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("max_bytes", sa.BigInteger, nullable=True),
        sa.Column("max_files", sa.BigInteger, nullable=True),
        sa.Column("max_daily_bytes", sa.BigInteger, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant", name="pk_tenant_quotas"),
    )
    op.create_table(
        "tenant_usage",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("files", sa.BigInteger, nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("day_bytes", sa.BigInteger, nullable=False),
        sa.Column("reserved_bytes", sa.BigInteger, nullable=False),
        sa.Column("reserved_files", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant", name="pk_tenant_usage"),
    )
    op.create_table(
        "quota_reservations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("files", sa.Integer, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quota_reservations"),
    )
    op.create_index("ix_quota_reservations_expires_at", "quota_reservations", ["expires_at"])
    op.execute(
        "INSERT INTO tenant_usage"
        " (tenant, bytes, files, day, day_bytes, reserved_bytes, reserved_files)"
        " SELECT tenant, SUM(CASE WHEN sha256 IS NULL THEN 0 ELSE size END), COUNT(*),"
        " 0, 0, 0, 0 FROM files GROUP BY tenant"
    )


def downgrade() -> None:
    op.drop_index("ix_quota_reservations_expires_at", "quota_reservations")
    op.drop_table("quota_reservations")
    op.drop_table("tenant_usage")
    op.drop_table("tenant_quotas")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rate_limit")
