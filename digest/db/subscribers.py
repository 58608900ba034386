"""Subscribers and their topics: lookups, the bulk writes of an import
(digest.subscribers_csv), and how many active subscribers follow each topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, selectinload

from digest.db.engine import update_rows
from digest.models import Subscriber, SubscriptionRequest, Topic


def find_subscriber(session: Session, email_key: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_key == email_key))


def stale_pending_subscribers(session: Session, cutoff: datetime) -> Sequence[Subscriber]:
    """Pending subscribers whose last confirmation request (or creation) is before `cutoff`."""
    requested = func.coalesce(Subscriber.confirm_sent_at, Subscriber.created_at)
    return session.scalars(
        select(Subscriber).where(Subscriber.status == "pending", requested < cutoff)
    ).all()


def delete_requests_before(session: Session, subscriber_id: int, request_id: int) -> None:
    """Delete the subscription requests of a subscriber made before request `request_id`."""
    session.execute(
        delete(SubscriptionRequest).where(
            SubscriptionRequest.subscriber_id == subscriber_id, SubscriptionRequest.id < request_id
        ),
        execution_options={"synchronize_session": "fetch"},
    )


def delete_stale_requests(session: Session, cutoff: datetime) -> None:
    """Delete the subscription requests made before `cutoff`: nobody confirmed them."""
    session.execute(
        delete(SubscriptionRequest).where(SubscriptionRequest.created_at < cutoff),
        execution_options={"synchronize_session": "fetch"},
    )


def list_subscribers(session: Session, status: str | None = None) -> Sequence[Subscriber]:
    statement = (
        select(Subscriber).options(selectinload(Subscriber.topics)).order_by(Subscriber.email_key)
    )
    if status is not None:
        statement = statement.where(Subscriber.status == status)
    return session.scalars(statement).all()


def subscribers_by_key(session: Session, keys: Iterable[str]) -> dict[str, Subscriber]:
    """The stored subscribers among these email keys, with their topics."""
    wanted = list(set(keys))
    found: dict[str, Subscriber] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        statement = (
            select(Subscriber)
            .options(selectinload(Subscriber.topics))
            .where(Subscriber.email_key.in_(chunk))
        )
        found.update((s.email_key, s) for s in session.scalars(statement))
    return found


def insert_subscribers(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert subscribers in bulk (column values); their new ids, in order."""
    if not rows:
        return []
    # Core statements: the ORM's bulk insert would split the rows wherever a value is None.
    table = Subscriber.metadata.tables["subscribers"]
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.connection().execute(statement, list(rows)).scalars())


def update_subscribers(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Update subscribers in bulk: each row holds an `id` and the same other columns."""
    update_rows(session, Subscriber.metadata.tables["subscribers"], ("id",), rows)


def replace_topics(
    session: Session, topics: Mapping[int, Sequence[tuple[str, str | None, datetime]]]
) -> None:
    """Set the topics (query, label, added at) of these subscribers in bulk, replacing theirs."""
    ids = list(topics)
    for start in range(0, len(ids), 500):
        session.execute(delete(Topic).where(Topic.subscriber_id.in_(ids[start : start + 500])))
    rows = [
        {
            "subscriber_id": subscriber_id,
            "position": position,
            "query": query,
            "label": label,
            "added_at": added_at,
        }
        for subscriber_id, specs in topics.items()
        for position, (query, label, added_at) in enumerate(specs)
    ]
    if rows:
        session.connection().execute(insert(Topic.metadata.tables["topics"]), rows)


def iter_subscribers(
    session: Session, status: str | None = None, batch: int = 1000
) -> Iterator[Subscriber]:
    """Every subscriber (in this state) with their topics, by email key, `batch` at a time."""
    statement = (
        select(Subscriber)
        .options(selectinload(Subscriber.topics))
        .order_by(Subscriber.email_key)
        .execution_options(yield_per=batch)
    )
    if status is not None:
        statement = statement.where(Subscriber.status == status)
    yield from session.scalars(statement)


def topic_subscriber_counts(session: Session) -> list[tuple[str, int]]:
    """Each distinct topic query with the number of active subscribers following it."""
    rows = session.execute(
        select(Topic.query, func.count(Topic.subscriber_id))
        .join(Subscriber, Subscriber.id == Topic.subscriber_id)
        .where(Subscriber.status == "active")
        .group_by(Topic.query)
        .order_by(func.count(Topic.subscriber_id).desc(), Topic.query)
    )
    return [(query, count) for query, count in rows]
