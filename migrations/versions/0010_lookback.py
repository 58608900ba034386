"""Topics remember when they were added (`topics.added_at`), so that a topic's first
digest looks back over the whole window, like a first digest, while the subscriber's
other topics keep "new since the previous digest".

Each delivery row keeps the latest `added_at` of the topics its digest was chosen with
(`deliveries.topics_until`; NULL for the rows before, read as their `created_at`), so a
topic added while a run was reading subscribers is looked back for exactly once.

The topics stored before are backfilled with their subscriber's `created_at`: as if
they had been there from the start, so the upgrade changes nobody's next digest.

Revision ID: 0010_lookback
Revises: 0009_subsafe
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_lookback"
down_revision = "0009_subsafe"
branch_labels = None
depends_on = None

topics = sa.table("topics", sa.column("subscriber_id"), sa.column("added_at"))
subscribers = sa.table("subscribers", sa.column("id"), sa.column("created_at"))


def upgrade() -> None:
    # A plain ALTER (not a batch copy, which cannot carry the partial claim index).
    op.add_column("deliveries", sa.Column("topics_until", sa.DateTime(timezone=True)))
    with op.batch_alter_table("topics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("added_at", sa.DateTime(timezone=True), nullable=True))
    created = (
        sa.select(subscribers.c.created_at)
        .where(subscribers.c.id == topics.c.subscriber_id)
        .scalar_subquery()
    )
    op.execute(topics.update().values(added_at=created))
    with op.batch_alter_table("topics", schema=None) as batch_op:
        batch_op.alter_column("added_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("topics", schema=None) as batch_op:
        batch_op.drop_column("added_at")
    op.drop_column("deliveries", "topics_until")
