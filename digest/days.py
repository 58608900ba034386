"""A subscriber's digest days and the instants that go with them: their local date,
the send time of a day (DST-aware), the instant a digest is chosen as of, and the trend
period. Pure: no database, no clock (`now` is an argument).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digest.models import Subscriber

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


def local_date(now: datetime, timezone: str) -> date:
    """The subscriber's calendar date at `now`."""
    return now.astimezone(ZoneInfo(timezone)).date()


def send_time(subscriber: Subscriber, day: date) -> datetime:
    """The instant of the subscriber's send hour on their local `day` (DST-aware)."""
    zone = ZoneInfo(subscriber.timezone)
    local = datetime.combine(day, time(subscriber.send_hour), tzinfo=zone)
    # fold=0: a repeated hour means its first occurrence; an hour skipped by DST maps,
    # through the offset before the change, to the instant of the change itself.
    return local.astimezone(UTC)


def selection_time(subscriber: Subscriber, day: date, now: datetime) -> datetime:
    """The instant a digest is chosen as of: its send time, or now if that is still ahead."""
    return min(now, send_time(subscriber, day))


def trend_window(subscriber: Subscriber) -> timedelta:
    return DAY if subscriber.weekday is None else WEEK


def sends_on(subscriber: Subscriber, day: date) -> bool:
    """Whether `day` is one of the subscriber's digest days (every day, or their weekday)."""
    return subscriber.weekday is None or day.weekday() == subscriber.weekday


def is_due_today(subscriber: Subscriber, now: datetime) -> bool:
    """Whether an active subscriber gets a digest on their current local date."""
    return subscriber.status == "active" and sends_on(
        subscriber, local_date(now, subscriber.timezone)
    )
