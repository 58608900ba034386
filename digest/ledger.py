"""The delivery ledger: one row per subscriber and digest date, and the only code that
moves a row from one `DeliveryStatus` to another.

    planned ──> queued ──claim──> sending ──mark_sent──> sent
       │          ▲                 │ ├──mark_unknown──> unknown ──requeue_unknown──> queued
       └─> empty  └────release──────┘ ├──mark_failed───> failed
                  ▲                   ├──defer─────────> deferred ──claim──> sending
                  │                   └──skip──────────> skipped
       a lease that runs out (the sender died): sending ──expire_leases──> unknown
       a send window that closed: queued / deferred ──skip──> skipped

Every transition is one guarded UPDATE (`WHERE status IN (the states it leaves)`), so
a row another process moved meanwhile is left alone: a transition returns how many
rows it moved. Exactly once rests on three rules: a row is `sending` before its
message leaves, a message that may have reached the server is never put back in the
queue (`unknown`, not `queued`), and only `requeue_unknown` (an operator's choice)
sends an `unknown` row again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from digest import db
from digest.models import CLAIMABLE_SQL, CLAIMABLE_STATUSES, Delivery, DeliveryStatus
from digest.sources.records import one_line

Status = DeliveryStatus
REPLY_CHARS = 500


@dataclass(frozen=True)
class Planned:
    """A chosen digest: `digest_id` None when there is nothing to send."""

    subscriber_id: int
    digest_date: date
    digest_id: int | None
    selected_at: datetime


def _insert(session: Session, rows: list[dict[str, object]], now: datetime) -> list[Status]:
    """Insert new ledger rows, leaving alone a (subscriber, date) already planned (the unique
    constraint: another process came first); the statuses of the rows inserted."""
    base = {"attempts": 0, "created_at": now, "updated_at": now}
    table = Delivery.__table__
    inserted = db.insert_new(session, table, [base | row for row in rows], [table.c.status])
    return [Status(status) for (status,) in inserted]


def plan(session: Session, planned: Sequence[Planned], now: datetime) -> tuple[int, int]:
    """The new rows of chosen digests: `queued`, or `empty` when there is nothing to send.

    Returns how many rows were queued and found empty.
    """
    statuses = _insert(
        session,
        [
            {
                "subscriber_id": p.subscriber_id,
                "digest_date": p.digest_date,
                "digest_id": p.digest_id,
                "status": Status.QUEUED if p.digest_id is not None else Status.EMPTY,
                "selected_at": p.selected_at,
            }
            # In key order, like every planner (see `db.store_digests`).
            for p in sorted(planned, key=lambda p: (p.subscriber_id, p.digest_date))
        ],
        now,
    )
    return statuses.count(Status.QUEUED), statuses.count(Status.EMPTY)


def unplannable(session: Session, failures: Sequence[tuple[int, date, str]], now: datetime) -> int:
    """`failed` rows for (subscriber id, date, reason) whose digest cannot even be chosen."""
    rows: list[dict[str, object]] = [
        {
            "subscriber_id": subscriber_id,
            "digest_date": digest_date,
            "status": Status.FAILED,
            "selected_at": now,
            "last_reply": one_line(reason)[:REPLY_CHARS],
        }
        for subscriber_id, digest_date, reason in sorted(failures)
    ]
    return len(_insert(session, rows, now))


def claim(
    session: Session, now: datetime, lease_until: datetime, dates: Iterable[date]
) -> int | None:
    """Atomically move one due queued or deferred delivery to `sending`; its id, or None.

    The next one is the first due entry of the partial index on claimable rows, so
    a claim costs the same however much of the day is already sent. On PostgreSQL,
    rows another sender holds are skipped (`FOR UPDATE SKIP LOCKED`).
    """
    claimable = text(CLAIMABLE_SQL)
    due = (
        select(Delivery.id)
        .where(
            claimable,
            Delivery.digest_date.in_(list(dates)),
            (Delivery.next_attempt_at.is_(None)) | (Delivery.next_attempt_at <= now),
        )
        # By date; fresh rows before retries, so rows that keep failing never hold up
        # the rest. The partial index ix_deliveries_claimable has this order.
        .order_by(
            Delivery.digest_date,
            Delivery.next_attempt_at.is_not(None),
            Delivery.next_attempt_at,
            Delivery.id,
        )
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    claimed = session.execute(
        update(Delivery)
        .where(Delivery.id == due.scalar_subquery(), claimable)
        .values(
            status=Status.SENDING,
            lease_until=lease_until,
            attempts=Delivery.attempts + 1,
            updated_at=now,
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    return claimed


def _move(
    session: Session,
    delivery_ids: Collection[int],
    leaving: Collection[Status],
    to: Status,
    now: datetime,
    **values: object,
) -> int:
    """Move the rows among `delivery_ids` that are in one of `leaving` to `to`."""
    if not delivery_ids:
        return 0
    result = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(delivery_ids)), Delivery.status.in_(list(leaving)))
        .values(status=to, lease_until=None, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def release(session: Session, delivery_id: int, now: datetime) -> int:
    """A claimed row back in the queue, its attempt not counted: nothing of it left."""
    # A claimed row has counted its attempt (`claim`), so this never goes below 0.
    return _move(
        session, [delivery_id], [Status.SENDING], Status.QUEUED, now, attempts=Delivery.attempts - 1
    )


def mark_sent(session: Session, delivery_ids: Collection[int], now: datetime, reply: str) -> int:
    """The server accepted these messages (also rows whose lease ran out meanwhile)."""
    return _move(
        session,
        delivery_ids,
        [Status.SENDING, Status.UNKNOWN],
        Status.SENT,
        now,
        sent_at=now,
        last_reply=reply[:REPLY_CHARS],
    )


def mark_unknown(session: Session, delivery_id: int, now: datetime, reply: str) -> int:
    """The message may have reached the server: it is never resent automatically."""
    return _move(
        session,
        [delivery_id],
        [Status.SENDING],
        Status.UNKNOWN,
        now,
        last_reply=reply[:REPLY_CHARS],
    )


def mark_failed(session: Session, delivery_id: int, now: datetime, reply: str) -> int:
    """Refused, or no message can be made: not retried (a refused row may fail again)."""
    return _move(
        session,
        [delivery_id],
        [Status.SENDING, Status.FAILED],
        Status.FAILED,
        now,
        last_reply=reply[:REPLY_CHARS],
    )


def defer(session: Session, delivery_id: int, now: datetime, retry_at: datetime, reply: str) -> int:
    """A temporary failure: claimable again from `retry_at` (a refused row too, when the
    refusals turned out to be the session's)."""
    return _move(
        session,
        [delivery_id],
        [Status.SENDING, Status.FAILED],
        Status.DEFERRED,
        now,
        next_attempt_at=retry_at,
        last_reply=reply[:REPLY_CHARS],
    )


def skip(session: Session, delivery_ids: Collection[int], now: datetime, reason: str) -> int:
    """Not sent on purpose: the subscriber left (a claimed row) or its window closed."""
    return _move(
        session,
        delivery_ids,
        [Status.SENDING, *CLAIMABLE_STATUSES],
        Status.SKIPPED,
        now,
        last_reply=reason[:REPLY_CHARS],
    )


def expire_leases(session: Session, now: datetime) -> int:
    """`sending` rows whose lease ran out become `unknown`: the process died mid-send."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.status == Status.SENDING, Delivery.lease_until < now)
        .values(status=Status.UNKNOWN, lease_until=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def requeue_unknown(session: Session, now: datetime, dates: Iterable[date]) -> int:
    """Queue `unknown` deliveries of these dates again (a deliberate, possibly duplicate resend)."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.status == Status.UNKNOWN, Delivery.digest_date.in_(list(dates)))
        .values(status=Status.QUEUED, next_attempt_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def counts(session: Session, dates: Iterable[date]) -> dict[Status, int]:
    """How many rows of these dates are in each status."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.digest_date.in_(list(dates)))
        .group_by(Delivery.status)
    )
    return {Status(status): count for status, count in rows}
