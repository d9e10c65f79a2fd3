"""Media: what each blob is as media (dimensions, duration, placeholder, waveform, pages,
previews) and whether its metadata was stripped.

Blobs stored before have no media fields: they are found when a preview is first asked
for, or never.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("media_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("media", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("metadata_stripped", sa.Boolean, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        for column in ("metadata_stripped", "media", "media_status"):
            batch.drop_column(column)
