"""Schedule stage: `digest run`, a long-running APScheduler 3 process with two jobs.

* **ingest** runs `digest.ingest.ingest_inputs` on the configured sources, on a
  cron expression (UTC).
* **dispatch** runs every few minutes, and once at start-up so a restart
  catches up at once. It sends, through `digest.deliver.send_digests` (the same
  code as `digest send`), the digest of every active subscriber whose local send
  time has come today (weekly subscribers on their weekday), unless more than
  the grace window has passed since: a missed digest is skipped, never sent
  hours late as if fresh. Send times are computed with zoneinfo, so they follow
  daylight saving: on the day an hour is skipped, a send hour inside the gap
  fires at the transition; on the day an hour repeats, it fires once, at the
  first occurrence.

**One digest per date, in date order, never two too close** (`allowed`): a subscriber
never gets a digest for a date on or before the latest date they already have a ledger
row for (whatever its status; that date's own row is its digest), and never one whose
send time is less than `MIN_GAP` (20 hours) after the selection time of a digest of an
earlier date that was planned or (may have been) sent; such a date is skipped. So moving
the timezone west after today's digest went out never brings a second digest dated the
day before, and moving the send hour more than four hours earlier (or the timezone more
than four hours east) skips one day instead of sending twice within hours. Weekly
subscribers follow the same rules. `next_digest` is the one answer to "when is this
subscriber's next digest" (a digest due within its grace window and not yet delivered
counts); `due_date`, the web's pages and `digest status` all read it.

Only one dispatcher works at a time: each run first takes (or renews) a lease
in the database; a second `digest run` waits and takes over when the lease of
a dead one runs out. The ledger's unique row per subscriber and day is the
guarantee beneath that. On SIGTERM or SIGINT the message in flight is finished
and recorded, nothing new is started, and the process exits 0.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from digest import db, ledger
from digest.config import DigestSettings, ScheduleConfig
from digest.days import local_date, send_time, sends_on
from digest.deliver import Sender, SendReport, Workers, send_digests
from digest.errors import DigestError
from digest.ingest import InputSummary
from digest.models import CLAIMABLE_STATUSES, RECEIVED_STATUSES, Subscriber
from digest.plan import PLAN_BATCH, DueList
from digest.subscribers import purge_pending, sendable

log = logging.getLogger("digest.schedule")

DISPATCH_LEASE = "dispatcher"


# Two digests to one subscriber are never closer than this (from the earlier one's
# selection time, its send time for the scheduler, to the later one's send time): a
# day may have 23 hours, and moving the send hour up to four hours earlier (or the
# timezone up to four hours east) keeps the daily rhythm; a bigger move skips a day.
MIN_GAP = timedelta(hours=20)
# The rows that count for MIN_GAP: digests planned to go out, or that (may have) gone.
GIVEN_STATUSES = frozenset((*CLAIMABLE_STATUSES, *RECEIVED_STATUSES))
HORIZON_DAYS = 400  # a digest date further ahead than this is never looked for


@dataclass(frozen=True)
class NextDigest:
    """A subscriber's next digest: its (local) date and its send time."""

    day: date
    at: datetime


def allowed(day: date, at: datetime, recent: Sequence[db.RecentDelivery]) -> bool:
    """Whether a digest for `day` going out at `at` keeps the rules, given the subscriber's
    recent ledger rows: no digest for a date before one they already have a row for (the
    row of `day` itself is that digest's own), and none within MIN_GAP after a digest of
    an earlier date planned or sent."""
    for row in recent:
        if row.digest_date > day:
            return False
        if (
            row.digest_date < day
            and row.status in GIVEN_STATUSES
            and at < row.selected_at + MIN_GAP
        ):
            return False
    return True


def send_dates(
    subscriber: Subscriber,
    now: datetime,
    grace: timedelta,
    recent: Sequence[db.RecentDelivery] = (),
) -> Iterator[NextDigest]:
    """The subscriber's digest dates, in order, whose send window [send time, + grace)
    has not closed at `now` and that the rules (`allowed`) let them have."""
    today = local_date(now, subscriber.timezone)
    for offset in range(-1, HORIZON_DAYS):
        day = today + timedelta(days=offset)
        if sends_on(subscriber, day):
            at = send_time(subscriber, day)
            if now < at + grace and allowed(day, at, recent):
                yield NextDigest(day, at)


def due_date(
    subscriber: Subscriber,
    now: datetime,
    grace: timedelta,
    recent: Sequence[db.RecentDelivery] = (),
) -> date | None:
    """The digest date whose send window [send time, + grace) holds `now`, if any.

    A date that already has its row is still due (the planner leaves the row alone and
    the sender retries it if it is queued or deferred)."""
    if subscriber.status != "active":
        return None
    first = next(send_dates(subscriber, now, grace, recent), None)
    return first.day if first is not None and first.at <= now else None


def next_digest(
    subscriber: Subscriber,
    now: datetime,
    grace: timedelta,
    recent: Sequence[db.RecentDelivery] = (),
) -> NextDigest | None:
    """The digest the subscriber gets next: one due now and not yet delivered (its send
    time may have passed, within the grace window), else the first one ahead."""
    done = {row.digest_date for row in recent if row.status not in CLAIMABLE_STATUSES}
    return next((d for d in send_dates(subscriber, now, grace, recent) if d.day not in done), None)


def recent_since(now: datetime, grace: timedelta) -> date:
    """The earliest digest date whose row can matter to `allowed` at `now`."""
    return (now - grace - MIN_GAP).date() - timedelta(days=2)  # local dates: +-14 h


def upcoming_digest(
    session: Session, subscriber: Subscriber, now: datetime, grace: timedelta
) -> NextDigest | None:
    """`next_digest` of one stored subscriber, reading their recent rows."""
    recent = db.recent_deliveries(session, [subscriber.id], recent_since(now, grace))
    return next_digest(subscriber, now, grace, recent.get(subscriber.id, []))


def with_recent(
    session: Session, subscribers: Iterable[Subscriber], since: date
) -> Iterator[tuple[Subscriber, list[db.RecentDelivery]]]:
    """Each subscriber with their ledger rows from `since` on, read `PLAN_BATCH` at a time."""
    stream = iter(subscribers)
    while batch := list(itertools.islice(stream, PLAN_BATCH)):
        recent = db.recent_deliveries(session, [s.id for s in batch], since)
        for subscriber in batch:
            yield subscriber, recent.get(subscriber.id, [])


def due_subscribers(session: Session, now: datetime, grace: timedelta) -> DueList:
    """The active subscribers with a digest due, and its date; streamed from the
    database (the send plans them in batches, never holding them all)."""
    # Only those with a send window open at all need their recent rows read.
    candidates = (
        subscriber
        for subscriber in db.iter_subscribers(session, "active")
        if sendable([subscriber], log.warning) and due_date(subscriber, now, grace) is not None
    )
    for subscriber, recent in with_recent(session, candidates, recent_since(now, grace)):
        day = due_date(subscriber, now, grace, recent)
        if day is not None:
            yield subscriber, day


def allowed_today(
    session: Session, subscribers: Iterable[Subscriber], now: datetime, grace: timedelta
) -> DueList:
    """Each of these subscribers (due today, `days.is_due_today`) with their local date at
    `now`, when the rules (`allowed`) let them have that date's digest now: what `digest
    send` sends without --date. Their recent rows are read `PLAN_BATCH` at a time."""
    for subscriber, recent in with_recent(session, subscribers, recent_since(now, grace)):
        day = local_date(now, subscriber.timezone)
        if allowed(day, now, recent):  # no earlier date, no second one too soon
            yield subscriber, day


def due_within(
    session: Session, now: datetime, window: timedelta, grace: timedelta
) -> list[tuple[Subscriber, datetime]]:
    """Active subscribers whose next digest (`next_digest`: due and not yet delivered, or
    ahead) has its send time before now + window, by send time."""
    active = sendable(db.list_subscribers(session, "active"))
    upcoming = [
        (subscriber, coming.at)
        for subscriber, recent in with_recent(session, active, recent_since(now, grace))
        if (coming := next_digest(subscriber, now, grace, recent)) and coming.at < now + window
    ]
    return sorted(upcoming, key=lambda pair: pair[1])


def skip_stale(session: Session, now: datetime, grace: timedelta) -> int:
    """Queued or deferred rows whose send window has closed become `skipped`."""
    stale = [
        delivery.id
        for delivery in db.deliveries_with_status(session, CLAIMABLE_STATUSES)
        if now >= send_time(delivery.subscriber, delivery.digest_date) + grace
    ]
    return ledger.skip(session, stale, now, "missed: not sent within the grace window")


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


@dataclass
class Dispatcher:
    """One dispatch run: take the lease, skip stale rows, forget unconfirmed requests, send."""

    factory: sessionmaker[Session]
    make_sender: Callable[[], Sender]
    settings: DigestSettings
    grace: timedelta
    lease_for: timedelta
    pending_for: timedelta = timedelta(days=7)
    holder: str = field(default_factory=default_holder)
    workers: Workers | None = None  # sender processes ([delivery] workers > 1)

    def run(self, now: datetime) -> SendReport | None:
        """Send what is due at `now`; None if another dispatcher holds the lease."""
        with db.transaction(self.factory) as session:
            if not db.acquire_lease(
                session, DISPATCH_LEASE, self.holder, now, now + self.lease_for
            ):
                return None
            skip_stale(session, now, self.grace)
            purge_pending(session, now, self.pending_for)
        return send_digests(
            self.make_sender(),
            lambda session: due_subscribers(session, now, self.grace),
            now=now,
            settings=self.settings,
            # A late (catch-up) dispatch chooses each digest as of its send time.
            at_send_time=True,
            workers=self.workers,
        )

    def release(self) -> None:
        with db.transaction(self.factory) as session:
            db.release_lease(session, DISPATCH_LEASE, self.holder)


@dataclass
class Service:
    """The `digest run` process: a background scheduler, its two jobs and clean shutdown."""

    factory: sessionmaker[Session]
    schedule: ScheduleConfig
    dispatcher: Dispatcher
    ingest: Callable[[Sequence[str], datetime], list[InputSummary]]
    clock: Callable[[], datetime]
    stop: threading.Event = field(default_factory=threading.Event)
    scheduler: BackgroundScheduler = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler = BackgroundScheduler(timezone=UTC)
        misfire = int(self.schedule.grace_hours * 3600)
        common = {"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire}
        if self.schedule.sources:
            self.scheduler.add_job(
                self.ingest_job,
                CronTrigger.from_crontab(self.schedule.ingest_cron, timezone=UTC),
                id="ingest",
                name="ingest",
                replace_existing=True,
                **common,
            )
        self.scheduler.add_job(
            self.dispatch_job,
            IntervalTrigger(minutes=self.schedule.dispatch_minutes, timezone=UTC),
            id="dispatch",
            name="dispatch",
            replace_existing=True,
            next_run_time=self.clock(),  # once at start-up: catch up at once
            **common,
        )

    def _record(self, job: str, started: datetime, ok: bool, summary: str) -> None:
        log.log(logging.INFO if ok else logging.WARNING, "%s: %s", job, summary)
        with db.transaction(self.factory) as session:
            db.record_job_run(
                session, job, self.dispatcher.holder, started, self.clock(), ok, summary
            )

    @contextlib.contextmanager
    def _failures(self, job: str, started: datetime) -> Iterator[None]:
        """A job stopped by the database or the environment: one log line, a failed run."""
        try:
            yield
        except (DigestError, SQLAlchemyError, OSError) as exc:
            reason = db.error_detail(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
            try:
                self._record(job, started, False, f"failed: {reason}")
            except SQLAlchemyError:
                log.error("%s: failed: %s (and the run could not be recorded)", job, reason)

    def ingest_job(self) -> None:
        started = self.clock()
        with self._failures("ingest", started):
            self._ingest(started)

    def _ingest(self, started: datetime) -> None:
        summaries = self.ingest(self.schedule.sources, started)
        failed = [s for s in summaries if not s.ok]
        summary = (
            f"{len(summaries)} inputs, {sum(s.new for s in summaries)} new, "
            f"{sum(s.updated for s in summaries)} updated, {len(failed)} failed"
        )
        for bad in failed:
            log.warning("ingest: %s", bad.line())
        self._record("ingest", started, not failed, summary)

    def dispatch_job(self) -> None:
        if self.stop.is_set():
            return
        started = self.clock()
        with self._failures("dispatch", started):
            self._dispatch(started)

    def _dispatch(self, started: datetime) -> None:
        report = self.dispatcher.run(started)
        if report is None:
            log.info("dispatch: another dispatcher holds the lease; standing by")
            return
        summary = report.line() + (f"; stopped: {report.fatal}" if report.fatal else "")
        self._record("dispatch", started, report.fatal is None, summary)

    def install_signal_handlers(self) -> None:
        handle = stop_handler(
            self.stop, lambda name: log.info("received %s: finishing the message in flight", name)
        )
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT; then let the job in hand finish and return."""
        self.scheduler.start()
        try:
            while not self.stop.wait(1.0):
                pass
        finally:
            self.scheduler.shutdown(wait=True)
            self.dispatcher.release()
            log.info("stopped")


def stop_handler(
    stop: threading.Event, announce: Callable[[str], None]
) -> Callable[[int, FrameType | None], None]:
    """A SIGTERM/SIGINT handler: the first signal sets `stop` (the message in flight is
    finished and recorded, nothing new starts); a second one interrupts at once."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        announce(signal.Signals(signum).name)
        stop.set()

    return handle


@contextlib.contextmanager
def stopping_on_signals(stop: threading.Event, announce: Callable[[str], None]) -> Iterator[None]:
    """`stop_handler` on SIGTERM and SIGINT for the block (main thread only), then the old ones."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handle = stop_handler(stop, announce)
    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def next_runs(
    schedule: ScheduleConfig, last_dispatch: datetime | None, now: datetime
) -> dict[str, datetime | None]:
    """When each job runs next, as `digest run` would schedule it."""
    ingest = None
    if schedule.sources:
        trigger = CronTrigger.from_crontab(schedule.ingest_cron, timezone=UTC)
        ingest = trigger.get_next_fire_time(None, now)
    interval = timedelta(minutes=schedule.dispatch_minutes)
    dispatch = max(now, last_dispatch + interval) if last_dispatch else None
    return {"ingest": ingest, "dispatch": dispatch}
