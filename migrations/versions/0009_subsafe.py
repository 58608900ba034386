"""Subscription requests: what the public form asked for, kept apart from the subscriber's
row until the address confirms it (a form submission no longer rewrites an existing
address's topics or settings).

Revision ID: 0009_subsafe
Revises: 0008_longkeys
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_subsafe"
down_revision = "0008_longkeys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("preferences", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_subscription_requests_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_requests")),
    )
    with op.batch_alter_table("subscription_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscription_requests_subscriber_id"), ["subscriber_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_subscription_requests_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("subscription_requests")
