"""Digests, their items, and the delivery rows planning and sending read.

`store_digests` stores the shared digests (one per date and content) with their
items, `digest_items` reads them back as plain rows; `received_papers`,
`previous_selections` and `planned_deliveries` tell the planner what each
subscriber got before, `recent_deliveries` the schedule what they got lately;
`deliveries_with_status` lists rows by status. Only digest.ledger changes a
delivery's status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from digest.db.engine import chunked, insert_new, insert_rows, table_named
from digest.models import RECEIVED_STATUSES, Delivery, DeliveryStatus, DigestItem, Subscriber


def _by_subscriber(pairs: Iterable[tuple[int, date]]) -> dict[int, list[date]]:
    days: dict[int, list[date]] = {}
    for subscriber_id, day in pairs:
        days.setdefault(subscriber_id, []).append(day)
    return days


class StoredItem(NamedTuple):
    """A stored digest item as rendering reads it (`views.ItemLike`): a plain row, far
    cheaper to load than a `DigestItem` entity when a send reads thousands."""

    paper_id: int
    kind: str
    topic: str
    topic_label: str | None
    relevance: float
    upvotes: int | None
    upvote_gain: int
    matched: str


_STORED_ITEMS = select(
    DigestItem.digest_id,
    DigestItem.paper_id,
    DigestItem.kind,
    DigestItem.topic,
    DigestItem.topic_label,
    DigestItem.relevance,
    DigestItem.upvotes,
    DigestItem.upvote_gain,
    DigestItem.matched,
).order_by(DigestItem.digest_id, DigestItem.position)


def digest_items(session: Session, digest_ids: Iterable[int]) -> dict[int, list[StoredItem]]:
    """The items of these digests, in order, by digest id (a digest without items is
    left out)."""
    found: dict[int, list[StoredItem]] = {}
    for chunk in chunked(sorted(set(digest_ids))):
        for row in session.execute(_STORED_ITEMS.where(DigestItem.digest_id.in_(chunk))):
            found.setdefault(row[0], []).append(StoredItem._make(row[1:]))
    return found


def received_papers(
    session: Session, pairs: Iterable[tuple[int, date]]
) -> dict[tuple[int, date], set[int]]:
    """For each (subscriber id, date): the papers in digests that subscriber received (or
    may have) before that date. Pairs with none are left out."""
    days = _by_subscriber(pairs)
    found: dict[tuple[int, date], set[int]] = {}
    for chunk in chunked(sorted(days)):
        rows = session.execute(
            select(Delivery.subscriber_id, Delivery.digest_date, DigestItem.paper_id)
            .join(Delivery, Delivery.digest_id == DigestItem.digest_id)
            .where(
                Delivery.subscriber_id.in_(chunk),
                Delivery.digest_date < max(day for s in chunk for day in days[s]),
                Delivery.status.in_(RECEIVED_STATUSES),
            )
        )
        for subscriber_id, got_on, paper_id in rows:
            for day in days[subscriber_id]:
                if got_on < day:
                    found.setdefault((subscriber_id, day), set()).add(paper_id)
    return found


def previous_selections(
    session: Session, pairs: Iterable[tuple[int, date]]
) -> dict[tuple[int, date], tuple[datetime, datetime]]:
    """For each (subscriber id, date): when the subscriber's latest earlier digest (received,
    or that found nothing to send) was chosen as of, and the latest time one of its topics
    had been added (for a row stored before it kept that, when it was planned). Pairs with
    none are left out."""
    by_day: dict[date, list[int]] = {}
    for subscriber_id, day in pairs:
        by_day.setdefault(day, []).append(subscriber_id)
    found: dict[tuple[int, date], tuple[datetime, datetime]] = {}
    for day, subscriber_ids in by_day.items():
        for chunk in chunked(sorted(set(subscriber_ids))):
            latest = (
                select(Delivery.subscriber_id, func.max(Delivery.digest_date).label("day"))
                .where(
                    Delivery.subscriber_id.in_(chunk),
                    Delivery.digest_date < day,
                    Delivery.status.in_((*RECEIVED_STATUSES, DeliveryStatus.EMPTY)),
                )
                .group_by(Delivery.subscriber_id)
                .subquery()
            )
            rows = session.execute(
                select(
                    Delivery.subscriber_id,
                    Delivery.selected_at,
                    func.coalesce(Delivery.topics_until, Delivery.created_at),
                ).join(
                    latest,
                    (Delivery.subscriber_id == latest.c.subscriber_id)
                    & (Delivery.digest_date == latest.c.day),
                )
            )
            found.update(
                ((subscriber_id, day), (at, planned)) for subscriber_id, at, planned in rows
            )
    return found


def planned_deliveries(
    session: Session, pairs: Iterable[tuple[int, date]]
) -> set[tuple[int, date]]:
    """The (subscriber id, date) pairs among these that already have a delivery row."""
    days = _by_subscriber(pairs)
    found: set[tuple[int, date]] = set()
    for chunk in chunked(sorted(days)):
        wanted = {day for s in chunk for day in days[s]}
        rows = session.execute(
            select(Delivery.subscriber_id, Delivery.digest_date).where(
                Delivery.subscriber_id.in_(chunk), Delivery.digest_date.in_(wanted)
            )
        )
        found.update((subscriber_id, day) for subscriber_id, day in rows)
    return found


class RecentDelivery(NamedTuple):
    """A ledger row as the schedule reads it (`digest.schedule.allowed`)."""

    digest_date: date
    status: str
    selected_at: datetime


def recent_deliveries(
    session: Session, subscriber_ids: Iterable[int], since: date
) -> dict[int, list[RecentDelivery]]:
    """The rows of these subscribers for digest dates from `since` on, by subscriber id
    (through the unique (subscriber, date) index; subscribers with none are left out)."""
    found: dict[int, list[RecentDelivery]] = {}
    for chunk in chunked(sorted(set(subscriber_ids))):
        rows = session.execute(
            select(
                Delivery.subscriber_id,
                Delivery.digest_date,
                Delivery.status,
                Delivery.selected_at,
            )
            .where(Delivery.subscriber_id.in_(chunk), Delivery.digest_date >= since)
            .order_by(Delivery.subscriber_id, Delivery.digest_date)
        )
        for subscriber_id, *row in rows:
            found.setdefault(subscriber_id, []).append(RecentDelivery._make(row))
    return found


def find_delivery(session: Session, subscriber_id: int, digest_date: date) -> Delivery | None:
    return session.scalar(
        select(Delivery).where(
            Delivery.subscriber_id == subscriber_id, Delivery.digest_date == digest_date
        )
    )


def digest_is_weekly(session: Session, digest_id: int) -> bool:
    """Whether a stored digest went to weekly subscribers (it is then titled "Weekly")."""
    weekday = session.scalar(
        select(Subscriber.weekday)
        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.digest_id == digest_id)
        .order_by(Delivery.id)
        .limit(1)
    )
    return weekday is not None


@dataclass(frozen=True)
class NewDigest:
    """A digest's content to store: `items` gives the rows of its items (DigestItem
    columns but `digest_id`), asked for only when the digest is stored."""

    digest_date: date
    content_hash: str
    more_matched: str
    items: Callable[[], list[dict[str, Any]]]


def store_digests(
    session: Session, digests: Sequence[NewDigest], now: datetime
) -> dict[tuple[date, str], int]:
    """The ids of the shared digests with these contents by (date, content hash), storing
    those no subscriber got yet, with their items, in a few statements."""
    table = table_named("digests")

    def stored(keys: Sequence[tuple[date, str]]) -> dict[tuple[date, str], int]:
        found: dict[tuple[date, str], int] = {}
        for chunk in chunked(sorted(keys)):
            rows = session.execute(
                select(table.c.digest_date, table.c.content_hash, table.c.id).where(
                    table.c.content_hash.in_([content_hash for _, content_hash in chunk]),
                    table.c.digest_date.in_({day for day, _ in chunk}),
                )
            )
            found.update(((day, content_hash), digest_id) for day, content_hash, digest_id in rows)
        return found

    ids = stored([(d.digest_date, d.content_hash) for d in digests])
    # In key order, as every planner inserts: two PostgreSQL planners waiting on each
    # other's rows in opposite orders would deadlock.
    missing = sorted(
        (d for d in digests if (d.digest_date, d.content_hash) not in ids),
        key=lambda d: (d.digest_date, d.content_hash),
    )
    rows = [
        {
            "digest_date": d.digest_date,
            "content_hash": d.content_hash,
            "created_at": now,
            "more_matched": d.more_matched,
        }
        for d in missing
    ]
    columns = (table.c.digest_date, table.c.content_hash, table.c.id)
    added = {(day, h): digest_id for day, h, digest_id in insert_new(session, table, rows, columns)}
    items = [
        {**item, "digest_id": added[(d.digest_date, d.content_hash)]}
        for d in missing
        if (d.digest_date, d.content_hash) in added
        for item in d.items()
    ]
    if items:
        insert_rows(session, table_named("digest_items"), items)
    ids |= added
    # Stored by another process meanwhile: theirs, with its items, is the same content.
    raced = [(d.digest_date, d.content_hash) for d in missing]
    ids |= stored([key for key in raced if key not in ids])
    return ids


def queued_by_date(session: Session) -> list[tuple[date, int]]:
    """How many delivery rows wait to be sent (`queued`), per digest date."""
    rows = session.execute(
        select(Delivery.digest_date, func.count())
        .where(Delivery.status == DeliveryStatus.QUEUED)
        .group_by(Delivery.digest_date)
        .order_by(Delivery.digest_date)
    )
    return [(day, count) for day, count in rows]


def deliveries_with_status(
    session: Session, statuses: Sequence[str], updated_since: datetime | None = None
) -> Sequence[Delivery]:
    statement = (
        select(Delivery)
        .options(selectinload(Delivery.subscriber))
        .where(Delivery.status.in_(statuses))
        .order_by(Delivery.digest_date, Delivery.id)
    )
    if updated_since is not None:
        statement = statement.where(Delivery.updated_at >= updated_since)
    return session.scalars(statement).all()
