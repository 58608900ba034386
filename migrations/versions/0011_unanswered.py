"""Subscribers remember when the first of their unanswered notice emails went out
(`subscribers.unanswered_since`): each confirmation or "already subscribed" email an
address leaves unanswered doubles the wait before the next, so the public form cannot
send someone who never asked an email every `web.resend_minutes`.

NULL (every row before) reads as no unanswered email: the next one waits the plain
`web.resend_minutes`, as before the upgrade.

Revision ID: 0011_unanswered
Revises: 0010_lookback
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_unanswered"
down_revision = "0010_lookback"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("unanswered_since", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # A plain DROP COLUMN: a batch copy of `subscribers` would drop the table, and with it
    # (ON DELETE CASCADE) every subscriber's topics, deliveries and requests.
    op.drop_column("subscribers", "unanswered_since")
