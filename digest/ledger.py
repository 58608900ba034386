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

A sender claims in two steps, so that it builds one message while the previous one is
being sent: `reserve` holds the next due row for it (still queued, with a lease; a
reservation that runs out leaves the row due again, never `unknown`), and `take` moves
the row to `sending` just before its message leaves. `claim` does both at once, and
`unreserve` hands back a held row whose message was never sent.

Transitions are Core statements on the session's connection: cheap enough to run
once per message, and they leave objects already loaded in the session as they were.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Date, Select, Update, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from digest import db
from digest.models import CLAIMABLE_SQL, CLAIMABLE_STATUSES, Delivery, DeliveryStatus, UTCDateTime
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
    topics_until: datetime | None = None  # `Selection.topics_until`


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
                "topics_until": p.topics_until,
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


# The statements of the send loop (a reservation, a take and a mark per message) are
# built once, with their values as parameters: building one costs more than running it.
_AT = bindparam("at", type_=UTCDateTime())
_LEASE = bindparam("lease", type_=UTCDateTime())
_DUE = (
    select(Delivery)
    .where(
        text(CLAIMABLE_SQL),
        Delivery.digest_date.in_(bindparam("dates", expanding=True, type_=Date())),
        Delivery.next_attempt_at.is_(None) | (Delivery.next_attempt_at <= _AT),
        Delivery.lease_until.is_(None) | (Delivery.lease_until < _AT),
    )
    .order_by(
        Delivery.digest_date,
        Delivery.next_attempt_at.is_not(None),
        Delivery.next_attempt_at,
        Delivery.id,
    )
)
_TAKE = (
    update(Delivery)
    .where(
        Delivery.id == bindparam("delivery"),
        text(CLAIMABLE_SQL),
        Delivery.lease_until == bindparam("held", type_=UTCDateTime()),
    )
    .values(
        status=Status.SENDING, lease_until=_LEASE, attempts=Delivery.attempts + 1, updated_at=_AT
    )
)
_MARK_SENT = (
    update(Delivery)
    .where(
        Delivery.id.in_(bindparam("ids", expanding=True)),
        Delivery.status.in_([Status.SENDING, Status.UNKNOWN]),
    )
    .values(
        status=Status.SENT,
        lease_until=None,
        updated_at=_AT,
        sent_at=_AT,
        last_reply=bindparam("reply"),
    )
)


@functools.cache
def _reserve_statement(skip_locked: bool) -> Update:
    due = _DUE.with_only_columns(Delivery.id).limit(1)
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    return (
        update(Delivery)
        .where(Delivery.id == due.scalar_subquery(), text(CLAIMABLE_SQL))
        .values(lease_until=_LEASE, updated_at=_AT)
        .returning(Delivery.id)
    )


def due_rows(now: datetime, dates: Iterable[date]) -> Select[Delivery]:
    """The due queued or deferred rows of these dates that no sender holds, in claim order.

    By date; fresh rows before retries, so rows that keep failing never hold up the
    rest. The partial index ix_deliveries_claimable has this order, so the first due
    row is found without sorting the day.
    """
    return _DUE.params(at=now, dates=list(dates))


def reserve(
    session: Session, now: datetime, lease_until: datetime, dates: Iterable[date]
) -> int | None:
    """Hold the first of `due_rows` for this sender until `lease_until`; its id, or None.

    The row stays queued (or deferred) while its message is built: a reservation that
    runs out (the sender died) leaves it due again, as if never held. On PostgreSQL,
    rows another sender is reserving are skipped (`FOR UPDATE SKIP LOCKED`).
    """
    statement = _reserve_statement(session.get_bind().dialect.name == "postgresql")
    values = {"at": now, "lease": lease_until, "dates": list(dates)}
    reserved: int | None = session.connection().execute(statement, values).scalar()
    return reserved


def take(
    session: Session,
    delivery_id: int,
    reserved_until: datetime,
    now: datetime,
    lease_until: datetime,
) -> bool:
    """A row this sender reserved (until `reserved_until`) to `sending`, its attempt
    counted; False if it is no longer this sender's to send."""
    values = {"delivery": delivery_id, "held": reserved_until, "lease": lease_until, "at": now}
    return bool(session.connection().execute(_TAKE, values).rowcount)


def claim(
    session: Session, now: datetime, lease_until: datetime, dates: Iterable[date]
) -> int | None:
    """Reserve and take the next due row at once (`sending`); its id, or None."""
    delivery_id = reserve(session, now, lease_until, dates)
    if delivery_id is not None:
        take(session, delivery_id, lease_until, now, lease_until)
    return delivery_id


def unreserve(session: Session, delivery_id: int, now: datetime) -> int:
    """A reserved row due again at once: its message was built but never sent."""
    result = session.connection().execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, text(CLAIMABLE_SQL))
        .values(lease_until=None, updated_at=now)
    )
    return int(result.rowcount or 0)


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
    result = session.connection().execute(
        update(Delivery)
        .where(Delivery.id.in_(list(delivery_ids)), Delivery.status.in_(list(leaving)))
        .values(status=to, lease_until=None, updated_at=now, **values)
    )
    return int(result.rowcount or 0)


def release(session: Session, delivery_id: int, now: datetime) -> int:
    """A claimed row back in the queue, its attempt not counted: nothing of it left."""
    # A claimed row has counted its attempt (`claim`), so this never goes below 0.
    return _move(
        session, [delivery_id], [Status.SENDING], Status.QUEUED, now, attempts=Delivery.attempts - 1
    )


def mark_sent(session: Session, delivery_ids: Collection[int], now: datetime, reply: str) -> int:
    """The server accepted these messages (also rows whose lease ran out meanwhile)."""
    if not delivery_ids:
        return 0
    values = {"ids": list(delivery_ids), "at": now, "reply": reply[:REPLY_CHARS]}
    return int(session.connection().execute(_MARK_SENT, values).rowcount or 0)


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
    result = session.connection().execute(
        update(Delivery)
        .where(Delivery.status == Status.SENDING, Delivery.lease_until < now)
        .values(status=Status.UNKNOWN, lease_until=None, updated_at=now)
    )
    return int(result.rowcount or 0)


def requeue_unknown(session: Session, now: datetime, dates: Iterable[date]) -> int:
    """Queue `unknown` deliveries of these dates again (a deliberate, possibly duplicate resend)."""
    result = session.connection().execute(
        update(Delivery)
        .where(Delivery.status == Status.UNKNOWN, Delivery.digest_date.in_(list(dates)))
        .values(status=Status.QUEUED, next_attempt_at=None, updated_at=now)
    )
    return int(result.rowcount or 0)


def counts(session: Session, dates: Iterable[date]) -> dict[Status, int]:
    """How many rows of these dates are in each status."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.digest_date.in_(list(dates)))
        .group_by(Delivery.status)
    )
    return {Status(status): count for status, count in rows}
