"""The states a subscriber can be in.

Kept apart from `models` (which loads SQLAlchemy) so that the command line can
offer them as choices without loading the database layer: `digest --help` stays fast.
"""

from __future__ import annotations

SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced")
