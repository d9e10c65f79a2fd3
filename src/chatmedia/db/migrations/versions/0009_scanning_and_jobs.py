"""Scanning and the processing pipeline: what the scanner said of each blob, the durable
jobs that follow a store, the quarantine, and the small facts the nodes share.

Blobs stored before have no scan status (scanning was not there): they stay served.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("scan_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("scan_signature", sa.Text, nullable=True))
        batch.add_column(sa.Column("scanned_at", _TS, nullable=True))
        batch.add_column(sa.Column("scan_version", sa.Text, nullable=True))
    op.create_index("ix_blobs_scan_status_created_at", "blobs", ["scan_status", "created_at"])
    op.create_table(
        "jobs",
        sa.Column("seq", _SEQ, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_after", _TS, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_jobs"),
        sa.UniqueConstraint("kind", "subject", name="uq_jobs_kind"),
    )
    op.create_index("ix_jobs_priority_run_after", "jobs", ["priority", "run_after"])
    op.create_table(
        "quarantine",
        sa.Column("seq", _SEQ, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("file_id", sa.String(32), nullable=True),
        sa.Column("blob_kept", sa.Boolean, nullable=False),
        sa.Column("detected_at", _TS, nullable=False),
        sa.Column("released_at", _TS, nullable=True),
        sa.Column("released_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_quarantine"),
    )
    op.create_index("ix_quarantine_sha256", "quarantine", ["sha256"])
    op.create_index("ix_quarantine_tenant_seq", "quarantine", ["tenant", "seq"])
    op.create_table(
        "service_state",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_service_state"),
    )


def downgrade() -> None:
    op.drop_table("service_state")
    op.drop_table("quarantine")
    op.drop_table("jobs")
    op.drop_index("ix_blobs_scan_status_created_at", "blobs")
    with op.batch_alter_table("blobs") as batch:
        for column in ("scan_version", "scanned_at", "scan_signature", "scan_status"):
            batch.drop_column(column)
