"""Faster ingest: each paper source remembers the hash of the record it last gave.

`paper_sources.content_hash` lets a re-ingest recognise a record it has merged
already with one comparison (only its upvote count is then looked at). Rows
stored before have none; the next ingest of their record fills it in.

Revision ID: 0007_ingestfast
Revises: 0006_pgscale
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_ingestfast"
down_revision = "0006_pgscale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("paper_sources", sa.Column("content_hash", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("paper_sources") as batch_op:
        batch_op.drop_column("content_hash")
