"""Deliver stage: the send loop. Claim each queued delivery, send its message through
a transport and record the outcome.

* `send_digests` plans the due subscribers' digests (`digest.plan`) and sends them.
* `Sender` claims each queued delivery, asks `digest.message.DigestMailer` for its
  message, sends it through a transport (`digest.transport`: SMTP, the Maildir
  outbox, memory) and records the outcome through the ledger's transitions. One
  recipient's failure (a message that cannot be built, a refusal) is recorded on
  that recipient's row and the run goes on; only a failure of the whole session
  stops it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, sessionmaker

from digest import db, ledger
from digest.config import DeliveryConfig, DigestSettings
from digest.message import DigestMailer, Unsendable, describe
from digest.models import CLAIMABLE_STATUSES, Delivery, DeliveryStatus, Subscriber
from digest.plan import DueList, plan_in_batches
from digest.transport import (
    Encoded,
    FatalTransportError,
    PermanentFailure,
    TemporaryFailure,
    Transport,
    UnknownOutcome,
)

Status = DeliveryStatus

# --- the send loop: claim, send, mark ------------------------------------------------

# This many recipients in a row failing the same way (the same hint) is the session's
# problem, not theirs: the run stops rather than burn through the whole queue.
SESSION_STREAK = 3


@dataclass
class SendReport:
    """What a `digest send` run did (sent, and found empty), and where the ledger stands
    for its dates (deferred, failed, unknown, still queued)."""

    sent: int = 0
    empty: int = 0
    deferred: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    queued: int = 0
    left_out: int = 0  # active subscribers that cannot be planned (an unknown timezone)
    bounced: list[str] = field(default_factory=list)
    fatal: str | None = None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        problems = self.failed or self.unknown or self.deferred or self.left_out
        return self.fatal is None and not problems

    def line(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        return (
            f"{verb} {self.sent}, empty {self.empty}, deferred {self.deferred}, "
            f"failed {self.failed}, unknown {self.unknown}"
            + (f", skipped {self.skipped}" if self.skipped else "")
            + (f", still queued {self.queued}" if self.queued else "")
            + (f", left out {self.left_out}" if self.left_out else "")
        )


def day_end(digest_date: date, timezone: str) -> datetime:
    """The instant the subscriber's digest day ends (their next local midnight)."""
    return datetime.combine(digest_date + timedelta(days=1), dtime(), tzinfo=ZoneInfo(timezone))


WARM_BATCH = 500  # digests whose cards are inlined together before sending
READ_AHEAD = 50  # due rows loaded together, ahead of their claims
# What building a delivery's message reads: its subscriber, their topics and its digest,
# loaded with the rows in a few queries rather than lazily per message.
WITH_MESSAGE_DATA = (
    joinedload(Delivery.subscriber).selectinload(Subscriber.topics),
    joinedload(Delivery.digest),
)


@dataclass
class Outcome:
    """How one claimed delivery ended, and the hint of its failure (see `digest.transport`)."""

    delivery: Delivery
    subscriber: Subscriber
    status: Status
    reply: str = ""
    hint: str | None = None
    refused: bool = False  # failed on a refusal that a block of the whole session explains
    sent_at: datetime | None = None  # when the server accepted it (status SENT)


@dataclass
class Composed:
    """A reserved delivery (held until `reserved_until`) and its message: None when the
    subscriber is no longer active, `Unsendable` when it cannot be made."""

    delivery: Delivery
    subscriber: Subscriber
    message: EmailMessage | Encoded | Unsendable | None
    reserved_until: datetime


@dataclass
class Sender:
    """Sends queued deliveries through a transport, one claimed row at a time."""

    factory: sessionmaker[Session]
    transport: Transport
    mailer: DigestMailer
    config: DeliveryConfig
    clock: Callable[[], datetime]
    rng: random.Random = field(default_factory=random.Random)
    should_stop: Callable[[], bool] = lambda: False
    on_start: Callable[[int], None] | None = None
    on_progress: Callable[[str], None] | None = None
    # The due rows read ahead of their claims (`_read_ahead`), and the session they live in.
    _ahead: dict[int, Delivery] = field(default_factory=dict, repr=False)
    _items: dict[int, list[db.StoredItem]] = field(default_factory=dict, repr=False)
    _session: Session | None = field(default=None, repr=False)

    def _record(self, transition: Callable[[Session, datetime], object]) -> None:
        """Run one ledger transition in its own transaction, as of the clock."""
        with db.transaction(self.factory) as session:
            transition(session, self.clock())

    def _mark_sent(self, outcome: Outcome, session: Session | None = None) -> None:
        """Record that the server accepted the message (in `session`, or on its own)."""
        assert outcome.sent_at is not None
        sent_at, reply = outcome.sent_at, outcome.reply
        if session is None:
            self._record(lambda session, _: self._mark_sent(outcome, session))
        else:
            ledger.mark_sent(session, [outcome.delivery.id], sent_at, reply)

    def _release(self, delivery_id: int) -> None:
        """Back to the queue as claimed: nothing of it can have been delivered."""
        self._record(lambda session, now: ledger.release(session, delivery_id, now))

    def _unreserve(self, delivery_id: int) -> None:
        """A reserved row due again: its message was never handed to the transport."""
        self._record(lambda session, now: ledger.unreserve(session, delivery_id, now))

    def _fail(self, delivery_id: int, reply: str) -> None:
        self._record(lambda session, now: ledger.mark_failed(session, delivery_id, now, reply))

    def _unknown(self, delivery_id: int, reply: str) -> None:
        self._record(lambda session, now: ledger.mark_unknown(session, delivery_id, now, reply))

    def _compose(self, delivery_id: int, reserved_until: datetime, dates: set[date]) -> Composed:
        """The reserved row, its subscriber and its message."""
        delivery = self._ahead.pop(delivery_id, None)
        if delivery is None:
            self._read_ahead(delivery_id, dates)
            delivery = self._ahead.pop(delivery_id)
        session = self._reader()
        try:
            subscriber = delivery.subscriber
            message: EmailMessage | Encoded | Unsendable | None = None
            if subscriber.status == "active":
                try:
                    items = self._items.get(delivery.digest_id or 0)
                    if self.transport.takes_encoded:
                        message = self.mailer.delivery_message(
                            session, delivery, self.clock(), encoded=True, items=items
                        )
                    else:
                        message = self.mailer.delivery_message(
                            session, delivery, self.clock(), items=items
                        )
                except Unsendable as exc:
                    message = exc
            return Composed(delivery, subscriber, message, reserved_until)
        finally:
            session.commit()  # ends the read (a digest's items may have been loaded)

    def _reader(self) -> Session:
        if self._session is None:
            self._session = self.factory()
        return self._session

    def _read_ahead(self, delivery_id: int, dates: set[date]) -> None:
        """Load the claimed row and the next `READ_AHEAD` due ones in claim order, each
        with its subscriber, their topics and its digest (its items as plain rows): a few
        queries per batch rather than per message. A subscriber's status is thus read up
        to a batch before their message is built (a fraction of a second at sending
        speed)."""
        session = self._reader()
        upcoming = ledger.due_rows(self.clock(), dates).with_only_columns(Delivery.id)
        ids = [delivery_id, *session.scalars(upcoming.limit(READ_AHEAD))]
        self._ahead = {
            delivery.id: delivery
            for delivery in session.scalars(
                select(Delivery)
                .where(Delivery.id.in_(ids))
                .options(*WITH_MESSAGE_DATA)
                .execution_options(populate_existing=True)
            ).unique()
        }
        self._items = db.digest_items(
            session, (d.digest_id for d in self._ahead.values() if d.digest_id is not None)
        )
        session.commit()

    def _retry_or_fail(self, delivery: Delivery, subscriber: Subscriber, reply: str) -> Status:
        now = self.clock()
        with self.factory() as session:  # the attempts counted so far, claims included
            attempts = session.scalar(select(Delivery.attempts).where(Delivery.id == delivery.id))
        delay = self.config.retry_base_seconds * 2 ** max(0, (attempts or 1) - 1)
        retry_at = now + timedelta(seconds=delay * (1 + self.rng.uniform(0, 0.5)))
        if retry_at >= day_end(delivery.digest_date, subscriber.timezone):
            self._fail(delivery.id, f"gave up, the day is over: {reply}")
            return Status.FAILED
        self._record(lambda session, now: ledger.defer(session, delivery.id, now, retry_at, reply))
        return Status.DEFERRED

    def _bounce(self, subscriber: Subscriber, report: SendReport) -> None:
        with db.transaction(self.factory) as session:
            bounced = session.get(Subscriber, subscriber.id)
            assert bounced is not None
            bounced.status = "bounced"
            bounced.updated_at = self.clock()
        report.bounced.append(subscriber.email)

    def _unsent(self, composed: Composed, report: SendReport) -> Outcome:
        """Record a taken row that has no message to send: the subscriber left, or the
        message cannot be made."""
        delivery, subscriber, message = composed.delivery, composed.subscriber, composed.message
        if message is None:
            reason = f"subscriber {subscriber.status}"
            self._record(lambda session, now: ledger.skip(session, [delivery.id], now, reason))
            report.skipped += 1
            return Outcome(delivery, subscriber, Status.SKIPPED, reason)
        assert isinstance(message, Unsendable)
        if message.retry:  # the shared rendering failed: maybe fixed by a later run
            status = self._retry_or_fail(delivery, subscriber, message.reason)
            return Outcome(delivery, subscriber, status, message.reason, message.reason)
        self._fail(delivery.id, message.reason)
        return Outcome(delivery, subscriber, Status.FAILED, message.reason)

    def _finish(self, composed: Composed, sending: Future[str], report: SendReport) -> Outcome:
        """Wait for the transport's answer about a message and record it in the ledger.

        A failure of this recipient (a refusal, an unknown outcome) is recorded on
        its row; a failure of the session (FatalTransportError) puts the row back in
        the queue and is raised.
        """
        delivery, subscriber = composed.delivery, composed.subscriber
        delivery_id = delivery.id
        try:
            reply = sending.result()
        except TemporaryFailure as exc:
            status = self._retry_or_fail(delivery, subscriber, exc.reply)
            return Outcome(delivery, subscriber, status, exc.reply, exc.hint)
        except PermanentFailure as exc:
            self._fail(delivery_id, exc.reply)
            if exc.bounce:
                self._bounce(subscriber, report)
            return Outcome(delivery, subscriber, Status.FAILED, exc.reply, exc.hint, refused=True)
        except UnknownOutcome as exc:
            self._unknown(delivery_id, exc.reply)
            return Outcome(delivery, subscriber, Status.UNKNOWN, exc.reply, exc.hint)
        except FatalTransportError:
            self._release(delivery_id)
            raise
        except Exception as exc:
            # Unexpected, and maybe about this message only: once it may have reached the
            # server it is unknown, else retried later; the run goes on (or stops on a streak).
            reason = f"could not be sent: {describe(exc)}"
            if self.transport.in_doubt():
                self._unknown(delivery_id, reason)
                return Outcome(delivery, subscriber, Status.UNKNOWN, reason, reason)
            status = self._retry_or_fail(delivery, subscriber, reason)
            return Outcome(delivery, subscriber, status, reason, reason)
        except BaseException as exc:
            # Interrupted (Ctrl-C): once the message may have reached the server, it is
            # not resent automatically; before that, it goes back to the queue. While the
            # transport is still at it, it may yet reach the server.
            if not sending.done() or self.transport.in_doubt():
                self._unknown(delivery_id, f"interrupted: {exc!r}")
            else:
                self._release(delivery_id)
            raise
        # Marked `sent` by the caller: in the transaction that claims a later row.
        report.sent += 1
        if self.on_progress is not None:
            self.on_progress(subscriber.email)
        return Outcome(delivery, subscriber, Status.SENT, reply, sent_at=self.clock())

    def _session_blocked(self, streak: list[Outcome]) -> str:
        """Stop after a streak of identical failures; refused rows are retried later instead."""
        for outcome in streak:
            if outcome.refused:
                self._retry_or_fail(outcome.delivery, outcome.subscriber, outcome.reply)
        return (
            f"{len(streak)} recipients in a row failed the same way, so the server or the "
            f"sender is at fault, not the recipients; stopped: {streak[-1].hint}"
        )

    def warm(self, dates: set[date]) -> None:
        """Inline the paper cards of the queued digests of `dates` before sending, in few
        premailer runs (see `DigestMailer.warm`)."""
        with self.factory() as session:
            digests = session.execute(
                select(Delivery.digest_id, Subscriber.weekday.is_not(None))
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(
                    Delivery.digest_date.in_(list(dates)),
                    Delivery.status.in_(CLAIMABLE_STATUSES),
                    Delivery.digest_id.is_not(None),
                )
                .distinct()
            ).all()
            for start in range(0, len(digests), WARM_BATCH):
                chunk = [(d, bool(w)) for d, w in digests[start : start + WARM_BATCH] if d]
                self.mailer.warm(session, chunk)

    def send_queued(self, dates: set[date], report: SendReport, limit: int | None) -> None:
        """Claim and send due rows of `dates` until none is left, the limit, or a stop.

        The transport sends one message in a thread while this one builds the next
        (the transport mostly waits for the server). Each step is one transaction:
        mark the rows just sent, take the row whose message is built (`sending`) and
        reserve the next one (`digest.ledger`), so a crash leaves at most one row
        `unknown` (sent, not yet marked) and the reserved row due again.
        """
        lease = timedelta(seconds=self.config.lease_seconds)
        self.warm(dates)
        if self.on_start is not None:
            with self.factory() as session:
                waiting = ledger.counts(session, dates)
            total = waiting.get(Status.QUEUED, 0) + waiting.get(Status.DEFERRED, 0)
            self.on_start(total if limit is None else min(limit, total))
        streak: list[Outcome] = []
        sent: list[Outcome] = []  # accepted by the server, marked in the next step
        built: Composed | None = None  # reserved, its message built
        sending: tuple[Composed, Future[str]] | None = None  # in the transport's thread
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-transport")

        def stops(outcome: Outcome) -> bool:
            """Count the outcome in the streak of identical failures; whether to stop."""
            nonlocal streak
            if outcome.status == Status.SENT:
                sent.append(outcome)
            if outcome.hint is None or (streak and streak[-1].hint != outcome.hint):
                streak = []
            if outcome.hint is not None:
                streak.append(outcome)
            if len(streak) >= SESSION_STREAK:
                report.fatal = self._session_blocked(streak)
                return True
            return False

        try:
            while True:
                go_on = not self.should_stop()
                ahead = (sending is not None) + (built is not None)
                now = self.clock()
                with db.transaction(self.factory) as session:
                    for outcome in sent:
                        self._mark_sent(outcome, session)
                    taken = None
                    if built is not None and go_on:
                        until = built.reserved_until
                        if ledger.take(session, built.delivery.id, until, now, now + lease):
                            taken = built
                    reserved = None
                    if go_on and (limit is None or report.sent + ahead < limit):
                        reserved = ledger.reserve(session, now, now + lease, dates)
                sent.clear()
                if taken is not None:
                    built = None
                    if isinstance(taken.message, EmailMessage | Encoded):
                        sending = taken, pool.submit(self.transport.send, taken.message)
                    elif stops(self._unsent(taken, report)):
                        break
                elif built is not None and go_on:
                    built = None  # another sender took it over: it is theirs to send
                if reserved is not None:
                    try:
                        built = self._compose(reserved, now + lease, dates)
                    except BaseException:
                        self._unreserve(reserved)
                        raise
                if sending is not None:
                    done, sending = sending, None
                    try:
                        outcome = self._finish(*done, report)
                    except FatalTransportError as exc:
                        report.fatal = str(exc)
                        break
                    if stops(outcome):
                        break
                elif reserved is None and (built is None or not go_on):
                    break
        except BaseException as exc:
            if sending is not None:
                self._abandon(*sending, report, interrupted=not isinstance(exc, Exception))
            raise
        finally:
            if built is not None:
                self._unreserve(built.delivery.id)
            if sent:
                with db.transaction(self.factory) as session:
                    for outcome in sent:
                        self._mark_sent(outcome, session)
            pool.shutdown(wait=False)
            self.transport.close()
            self._ahead, self._items = {}, {}
            if self._session is not None:
                self._session.close()
                self._session = None

    def _abandon(
        self, composed: Composed, sending: Future[str], report: SendReport, *, interrupted: bool
    ) -> None:
        """Record the message in the transport's thread when the run fails meanwhile: its
        outcome once known (at once if interrupted: then it may have left, so unknown)."""
        if interrupted and not sending.done():
            self._unknown(composed.delivery.id, "interrupted while sending")
            return
        wait([sending])
        with contextlib.suppress(BaseException):  # recorded; the run's own error goes on
            outcome = self._finish(composed, sending, report)
            if outcome.status == Status.SENT:
                self._mark_sent(outcome)


# Sends the queued rows of these dates with sender processes sharing the queue, up to
# a limit; their reports (see `digest.app.App.send_workers`).
Workers = Callable[[set[date], int | None], list[SendReport]]


def merge_reports(report: SendReport, parts: Sequence[SendReport]) -> None:
    """Add what each worker did to `report`."""
    for part in parts:
        report.sent += part.sent
        report.skipped += part.skipped
        report.bounced.extend(part.bounced)
        report.fatal = report.fatal or part.fatal


def send_digests(
    sender: Sender,
    due: Callable[[Session], DueList],
    *,
    now: datetime,
    settings: DigestSettings,
    dry_run: bool = False,
    limit: int | None = None,
    retry_unknown: bool = False,
    at_send_time: bool = False,
    workers: Workers | None = None,
) -> SendReport:
    """Plan the digests of the `due` (subscriber, date) pairs and send every queued one.

    `digest send` and the scheduler's dispatcher both run exactly this. Digests are
    chosen as of `now`, or with `at_send_time` as of their send time (the scheduler,
    and `digest send --date`). With `workers`, sender processes share the sending.
    """
    report = SendReport(dry_run=dry_run)
    if dry_run:
        return _dry_run(sender, due, now=now, settings=settings, at_send_time=at_send_time)
    with db.transaction(sender.factory) as session:
        ledger.expire_leases(session, now)
    # Empty: the rows this run found nothing to send for (not those of earlier runs).
    dates, report.empty = plan_in_batches(
        sender.factory, due, now=now, settings=settings, at_send_time=at_send_time
    )
    if retry_unknown:
        with db.transaction(sender.factory) as session:
            ledger.requeue_unknown(session, now, dates)
    if dates:
        if workers is None:
            sender.send_queued(dates, report, limit)
        else:
            merge_reports(report, workers(dates, limit))
        with sender.factory() as session:
            counts = ledger.counts(session, dates)
        report.deferred = counts.get(Status.DEFERRED, 0)
        report.failed = counts.get(Status.FAILED, 0)
        report.unknown = counts.get(Status.UNKNOWN, 0)
        report.queued = counts.get(Status.QUEUED, 0)
    return report


def _dry_run(
    sender: Sender,
    due: Callable[[Session], DueList],
    *,
    now: datetime,
    settings: DigestSettings,
    at_send_time: bool,
) -> SendReport:
    """Plan and render everything that would be sent; write and send nothing."""
    report = SendReport(dry_run=True)

    def render(session: Session, batch: list[tuple[Subscriber, date]]) -> None:
        planned = (
            session.scalars(
                select(Delivery)
                .where(
                    Delivery.subscriber_id.in_([subscriber.id for subscriber, _ in batch]),
                    Delivery.digest_date.in_({day for _, day in batch}),
                    Delivery.status.in_(CLAIMABLE_STATUSES),
                )
                .options(*WITH_MESSAGE_DATA)
            )
            .unique()
            .all()
        )
        weekly = {subscriber.id: subscriber.weekday is not None for subscriber, _ in batch}
        digests = {(d.digest_id, weekly[d.subscriber_id]) for d in planned if d.digest_id}
        items = db.digest_items(session, (digest_id for digest_id, _ in digests))
        sender.mailer.warm(session, sorted(digests), items)
        for delivery in planned:
            try:
                sender.mailer.delivery_message(
                    session, delivery, now, encoded=True, items=items.get(delivery.digest_id or 0)
                )
                report.sent += 1
            except Unsendable:
                report.failed += 1

    _, report.empty = plan_in_batches(
        sender.factory,
        due,
        now=now,
        settings=settings,
        at_send_time=at_send_time,
        each=render,
        write=False,
    )
    return report
