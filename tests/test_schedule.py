"""The scheduler: local send times across timezones and DST, catch-up, grace, one dispatcher."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from digest import db
from digest.config import DeliveryConfig, DigestSettings, MailConfig, ScheduleConfig
from digest.days import send_time
from digest.deliver import Sender
from digest.errors import DatabaseUnavailable
from digest.message import DigestMailer
from digest.models import Delivery, JobRun, Subscriber
from digest.render import Renderer
from digest.schedule import Dispatcher, Service, due_date, skip_stale
from digest.subscribers import find_or_create, subscribe
from digest.transport import MemoryTransport
from tests.processes import digest_env

GRACE = timedelta(hours=6)
SETTINGS = DigestSettings(send_empty=True)  # every due day sends, even with no papers


def person(timezone: str, hour: int, weekday: int | None = None) -> Subscriber:
    return Subscriber(timezone=timezone, send_hour=hour, weekday=weekday, status="active")


@pytest.mark.parametrize(
    ("timezone", "hour", "day", "expected_utc"),
    [
        ("Pacific/Auckland", 7, date(2026, 11, 25), datetime(2026, 11, 24, 18, 0)),  # NZDT +13
        ("Pacific/Auckland", 7, date(2026, 6, 15), datetime(2026, 6, 14, 19, 0)),  # NZST +12
        ("America/Los_Angeles", 7, date(2026, 11, 25), datetime(2026, 11, 25, 15, 0)),  # PST
        ("Asia/Kolkata", 8, date(2026, 11, 25), datetime(2026, 11, 25, 2, 30)),  # +5:30
        # Los Angeles springs forward on 8 March 2026: 02:00-03:00 does not exist,
        # so a 2 o'clock digest goes at the change, 03:00 PDT = 10:00 UTC.
        ("America/Los_Angeles", 2, date(2026, 3, 7), datetime(2026, 3, 7, 10, 0)),
        ("America/Los_Angeles", 2, date(2026, 3, 8), datetime(2026, 3, 8, 10, 0)),
        ("America/Los_Angeles", 2, date(2026, 3, 9), datetime(2026, 3, 9, 9, 0)),
        # ...and falls back on 1 November 2026: 01:00 happens twice; the first counts.
        ("America/Los_Angeles", 1, date(2026, 11, 1), datetime(2026, 11, 1, 8, 0)),
        ("America/Los_Angeles", 1, date(2026, 11, 2), datetime(2026, 11, 2, 9, 0)),
        # Auckland: DST ends 5 April (03:00 -> 02:00), starts 27 September (02:00 -> 03:00).
        ("Pacific/Auckland", 2, date(2026, 4, 5), datetime(2026, 4, 4, 13, 0)),
        ("Pacific/Auckland", 2, date(2026, 9, 27), datetime(2026, 9, 26, 14, 0)),
    ],
)
def test_send_times_follow_local_clocks(timezone, hour, day, expected_utc) -> None:
    assert send_time(person(timezone, hour), day) == expected_utc.replace(tzinfo=UTC)


def test_due_dates_and_the_grace_window() -> None:
    kolkata = person("Asia/Kolkata", 8)
    sent_at = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
    assert due_date(kolkata, sent_at - timedelta(minutes=1), GRACE) is None
    assert due_date(kolkata, sent_at, GRACE) == date(2026, 11, 25)
    assert due_date(kolkata, sent_at + GRACE - timedelta(seconds=1), GRACE) == date(2026, 11, 25)
    assert due_date(kolkata, sent_at + GRACE, GRACE) is None
    # A late-evening digest stays due past local midnight, for the day it belongs to.
    late = person("UTC", 23)
    assert due_date(late, datetime(2026, 11, 26, 2, 0, tzinfo=UTC), GRACE) == date(2026, 11, 25)
    weekly = person("Europe/London", 9, weekday=0)  # Mondays
    assert due_date(weekly, datetime(2026, 11, 23, 9, 30, tzinfo=UTC), GRACE) == date(2026, 11, 23)
    assert due_date(weekly, datetime(2026, 11, 24, 9, 30, tzinfo=UTC), GRACE) is None
    assert due_date(replace_status(kolkata, "unsubscribed"), sent_at, GRACE) is None


def replace_status(subscriber: Subscriber, status: str) -> Subscriber:
    return Subscriber(
        timezone=subscriber.timezone,
        send_hour=subscriber.send_hour,
        weekday=subscriber.weekday,
        status=status,
    )


class World:
    """Subscribers in a real database and dispatchers driven by a simulated clock."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.transport = MemoryTransport()

    def add(self, email: str, timezone: str, hour: int, weekday: int | None = None) -> None:
        with db.transaction(self.factory) as session:
            subscribe(
                session,
                email,
                ["*"],
                now=self.now - timedelta(days=30),
                timezone=timezone,
                hour=hour,
                weekday=weekday,
            )

    def sender(self) -> Sender:
        mailer = DigestMailer(
            Renderer(),
            MailConfig("digest@papers.example.org", "Papers Digest", None, ""),
            "https://digest.example.org",
            "secret-key-0123456789",
        )
        return Sender(
            factory=self.factory,
            transport=self.transport,
            mailer=mailer,
            config=DeliveryConfig(),
            clock=lambda: self.now,
        )

    def dispatcher(self, holder: str = "one") -> Dispatcher:
        return Dispatcher(
            factory=self.factory,
            make_sender=self.sender,
            settings=SETTINGS,
            grace=GRACE,
            lease_for=timedelta(minutes=15),
            holder=holder,
        )

    def sent(self) -> dict[str, list[datetime]]:
        out: dict[str, list[datetime]] = defaultdict(list)
        for message in self.transport.messages:
            out[str(message["To"])].append(message["Date"].datetime)
        return out


@pytest.fixture
def world(factory) -> World:
    return World(factory)


def test_each_subscriber_gets_one_digest_at_their_local_hour_across_dst(world: World) -> None:
    # Los Angeles falls back during these three days (1 November 2026).
    world.add("auckland@example.org", "Pacific/Auckland", 7)
    world.add("la-early@example.org", "America/Los_Angeles", 1)
    world.add("la@example.org", "America/Los_Angeles", 7)
    world.add("kolkata@example.org", "Asia/Kolkata", 8)
    world.add("monday@example.org", "Europe/London", 9, weekday=0)
    dispatcher = world.dispatcher()
    start = datetime(2026, 10, 31, 0, 0, tzinfo=UTC)
    for step in range(3 * 24 * 6):  # every 10 minutes for three days
        world.now = start + timedelta(minutes=10 * step)
        assert dispatcher.run(world.now) is not None
    sent = world.sent()
    for address, times in sent.items():
        subscriber_zone = {
            "auckland@example.org": ("Pacific/Auckland", 7),
            "la-early@example.org": ("America/Los_Angeles", 1),
            "la@example.org": ("America/Los_Angeles", 7),
            "kolkata@example.org": ("Asia/Kolkata", 8),
            "monday@example.org": ("Europe/London", 9),
        }[address]
        zone, hour = ZoneInfo(subscriber_zone[0]), subscriber_zone[1]
        local = [t.astimezone(zone) for t in times]
        # Exactly one per local day, within ten minutes after the local send hour.
        assert len({t.date() for t in local}) == len(local), address
        assert all(t.hour == hour and t.minute < 10 for t in local), (address, local)
    assert [
        t.astimezone(ZoneInfo("America/Los_Angeles")).date() for t in sent["la@example.org"]
    ] == [
        date(2026, 10, 31),
        date(2026, 11, 1),
        date(2026, 11, 2),
    ]
    # On the fall-back day, 01:00 came twice; the digest went once, at the first.
    assert datetime(2026, 11, 1, 8, 0, tzinfo=UTC) in sent["la-early@example.org"]
    assert datetime(2026, 11, 1, 9, 0, tzinfo=UTC) not in sent["la-early@example.org"]
    assert len(sent["auckland@example.org"]) == 3
    assert sent["monday@example.org"] == [datetime(2026, 11, 2, 9, 0, tzinfo=UTC)]


def test_spring_forward_day_still_sends_once(world: World) -> None:
    world.add("la@example.org", "America/Los_Angeles", 2)
    dispatcher = world.dispatcher()
    start = datetime(2026, 3, 7, 0, 0, tzinfo=UTC)
    for step in range(3 * 24 * 6):
        world.now = start + timedelta(minutes=10 * step)
        dispatcher.run(world.now)
    assert world.sent()["la@example.org"] == [
        datetime(2026, 3, 7, 10, 0, tzinfo=UTC),  # 02:00 PST
        datetime(2026, 3, 8, 10, 0, tzinfo=UTC),  # 02:00 does not exist: 03:00 PDT
        datetime(2026, 3, 9, 9, 0, tzinfo=UTC),  # 02:00 PDT
    ]


def test_catch_up_after_downtime_within_the_grace_window_only(world: World) -> None:
    world.add("seven@example.org", "UTC", 7)
    world.add("one@example.org", "UTC", 1)
    # The service was down from midnight until 09:00.
    world.now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    report = world.dispatcher().run(world.now)
    assert report is not None and report.sent == 1
    assert list(world.sent()) == ["seven@example.org"]  # 1 o'clock is 8 h ago: skipped
    world.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    world.dispatcher().run(world.now)
    assert list(world.sent()) == ["seven@example.org"]


def test_a_catch_up_chooses_the_digest_as_of_its_send_time(world: World, tmp_path) -> None:
    import json

    from digest.ingest import ingest_inputs

    world.add("seven@example.org", "UTC", 7)

    def ingest(at: datetime, arxiv_id: str, upvotes: int) -> None:
        items = [
            {
                "title": f"Paper {arxiv_id}",
                "summary": "A study.",
                "paper": {"id": arxiv_id, "upvotes": upvotes},
            }
        ]
        path = tmp_path / f"{arxiv_id}-{upvotes}.json"
        path.write_text(json.dumps(items), encoding="utf-8")
        ingest_inputs(world.factory, [str(path)], now=at, max_bytes=10**6)

    ingest(datetime(2026, 11, 25, 6, 0, tzinfo=UTC), "2611.00001", 4)
    # Seen during the downtime, after the 07:00 send time: not in that day's digest.
    ingest(datetime(2026, 11, 25, 8, 0, tzinfo=UTC), "2611.00002", 0)
    ingest(datetime(2026, 11, 25, 8, 0, tzinfo=UTC), "2611.00001", 90)
    world.now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    world.dispatcher().run(world.now)
    with world.factory() as session:
        delivery = session.scalars(select(Delivery)).one()
        assert delivery.selected_at == datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
        assert delivery.digest is not None
        assert [(i.paper.arxiv_id, i.upvotes) for i in delivery.digest.items] == [("2611.00001", 4)]


def ledger_rows(world: World) -> dict[str, list[tuple[date, str, datetime | None]]]:
    rows: dict[str, list[tuple[date, str, datetime | None]]] = defaultdict(list)
    with world.factory() as session:
        for row in session.scalars(select(Delivery).order_by(Delivery.digest_date)):
            rows[row.subscriber.email].append((row.digest_date, row.status, row.sent_at))
    return rows


def move(world: World, email: str, timezone: str, hour: int, weekday: int | None = None) -> None:
    with db.transaction(world.factory) as session:
        subscribe(
            session,
            email,
            ["*"],
            now=world.now,
            timezone=timezone,
            hour=hour,
            weekday=weekday,
            daily=weekday is None,
        )


def run_every_ten_minutes(world: World, start: datetime, hours: int) -> None:
    dispatcher = world.dispatcher()
    for step in range(hours * 6):
        world.now = start + timedelta(minutes=10 * step)
        assert dispatcher.run(world.now) is not None


def test_moving_west_after_a_digest_never_sends_an_earlier_date(world: World) -> None:
    # Friday 27 November, 02:00 UTC: both get their Friday digest.
    world.add("daily@example.org", "UTC", 2)
    world.add("weekly@example.org", "UTC", 2, weekday=4)  # Fridays
    world.now = datetime(2026, 11, 27, 2, 1, tzinfo=UTC)
    report = world.dispatcher().run(world.now)
    assert report is not None and report.sent == 2
    # Minutes later both move to Los Angeles at 18:00, where it is still Thursday 26th and
    # its 18:00 came at 02:00 UTC: a digest dated Thursday would be due at once.
    world.now = datetime(2026, 11, 27, 2, 5, tzinfo=UTC)
    move(world, "daily@example.org", "America/Los_Angeles", 18)
    move(world, "weekly@example.org", "America/Los_Angeles", 18, weekday=3)  # Thursdays
    run_every_ten_minutes(world, datetime(2026, 11, 27, 2, 7, tzinfo=UTC), hours=73)
    friday = datetime(2026, 11, 27, 2, 1, tzinfo=UTC)
    rows = ledger_rows(world)
    # Friday 27th was had (in UTC); the next dates follow at 18:00 Los Angeles time.
    assert rows["daily@example.org"] == [
        (date(2026, 11, 27), "sent", friday),
        (date(2026, 11, 28), "sent", datetime(2026, 11, 29, 2, 7, tzinfo=UTC)),
        (date(2026, 11, 29), "sent", datetime(2026, 11, 30, 2, 7, tzinfo=UTC)),
    ]
    assert rows["weekly@example.org"] == [(date(2026, 11, 27), "sent", friday)]


def test_two_digests_are_never_less_than_twenty_hours_apart(world: World) -> None:
    world.add("east@example.org", "UTC", 7)
    world.add("earlier@example.org", "UTC", 7)
    world.add("dst@example.org", "Europe/London", 7)
    world.now = datetime(2026, 11, 25, 7, 1, tzinfo=UTC)
    report = world.dispatcher().run(world.now)
    assert report is not None and report.sent == 3
    # Tokyo's Thursday 07:00 is Wednesday 22:00 UTC, 15 hours after Wednesday's digest:
    # Thursday is skipped. Moving the hour four hours earlier keeps the rhythm (20 h).
    world.now = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    move(world, "east@example.org", "Asia/Tokyo", 7)
    move(world, "earlier@example.org", "UTC", 3)
    run_every_ten_minutes(world, datetime(2026, 11, 25, 8, 0, tzinfo=UTC), hours=2 * 24)
    rows = ledger_rows(world)
    assert [(day, at) for day, _, at in rows["east@example.org"]] == [
        (date(2026, 11, 25), datetime(2026, 11, 25, 7, 1, tzinfo=UTC)),
        (date(2026, 11, 27), datetime(2026, 11, 26, 22, 0, tzinfo=UTC)),
    ]
    assert [(day, at) for day, _, at in rows["earlier@example.org"]] == [
        (date(2026, 11, 25), datetime(2026, 11, 25, 7, 1, tzinfo=UTC)),
        (date(2026, 11, 26), datetime(2026, 11, 26, 3, 0, tzinfo=UTC)),
        (date(2026, 11, 27), datetime(2026, 11, 27, 3, 0, tzinfo=UTC)),
    ]
    assert len(rows["dst@example.org"]) == 3


def test_the_schedule_rules_on_recent_rows() -> None:
    from digest.db import RecentDelivery
    from digest.schedule import MIN_GAP, allowed

    thursday = date(2026, 11, 26)
    sent = RecentDelivery(date(2026, 11, 27), "sent", datetime(2026, 11, 27, 2, 0, tzinfo=UTC))
    at = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    assert not allowed(thursday, at, [sent])  # an earlier date than one they have
    assert allowed(date(2026, 11, 27), at, [sent])  # that date's own row
    saturday, gap_ends = date(2026, 11, 28), sent.selected_at + MIN_GAP
    assert not allowed(saturday, gap_ends - timedelta(seconds=1), [sent])
    assert allowed(saturday, gap_ends, [sent])
    # Nothing was sent for an empty (or failed, or skipped) row: no gap needed after it,
    # but it still closes the dates before it.
    empty = sent._replace(status="empty")
    assert allowed(date(2026, 11, 28), sent.selected_at + timedelta(hours=1), [empty])
    assert not allowed(thursday, at, [empty])
    queued = sent._replace(status="queued")
    assert not allowed(date(2026, 11, 28), sent.selected_at + timedelta(hours=1), [queued])


def test_a_planned_but_unsent_digest_is_skipped_once_stale(world: World) -> None:
    world.add("seven@example.org", "UTC", 7)
    world.now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    world.transport = MemoryTransport()
    report = world.dispatcher().run(world.now)
    assert report is not None and report.sent == 1
    with db.transaction(world.factory) as session:
        row = session.scalars(select(Delivery)).one()
        row.status = "queued"  # as if the process died right after planning
    assert skip_stale_at(world, datetime(2026, 11, 25, 12, 59, tzinfo=UTC)) == 0
    assert skip_stale_at(world, datetime(2026, 11, 25, 13, 0, tzinfo=UTC)) == 1
    with world.factory() as session:
        row = session.scalars(select(Delivery)).one()
        assert (row.status, row.last_reply) == (
            "skipped",
            "missed: not sent within the grace window",
        )


def skip_stale_at(world: World, now: datetime) -> int:
    with db.transaction(world.factory) as session:
        return skip_stale(session, now, GRACE)


def test_dispatch_forgets_unconfirmed_subscription_requests(world: World) -> None:
    with db.transaction(world.factory) as session:
        for email, age in (("stale@example.org", 8), ("fresh@example.org", 2)):
            subscriber, _ = find_or_create(
                session, email, world.now - timedelta(days=age), "UTC", 7
            )
            assert subscriber.status == "pending"
    world.dispatcher().run(world.now)
    with world.factory() as session:
        assert [s.email for s in db.list_subscribers(session, "pending")] == ["fresh@example.org"]


def test_only_one_dispatcher_works_and_the_other_takes_over(world: World) -> None:
    for n in range(4):
        world.add(f"r{n}@example.org", "UTC", 7)
    first, second = world.dispatcher("first"), world.dispatcher("second")
    world.now = datetime(2026, 11, 25, 6, 50, tzinfo=UTC)
    assert first.run(world.now) is not None
    assert second.run(world.now) is None  # stands by
    world.now += timedelta(minutes=10)
    assert second.run(world.now) is None
    assert first.run(world.now) is not None  # renews its lease, sends the 07:00 digests
    assert len(world.transport.messages) == 4
    # The first dies; after its lease (15 min) the second takes over.
    world.now += timedelta(minutes=10)
    assert second.run(world.now) is None
    world.now += timedelta(minutes=6)
    assert second.run(world.now) is not None
    assert len(world.transport.messages) == 4


def test_racing_dispatchers_in_threads_never_double_send(world: World) -> None:
    for n in range(12):
        world.add(f"r{n}@example.org", "UTC", 7)
    world.now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    dispatchers = [world.dispatcher(f"d{n}") for n in range(3)]
    # Expired leases everywhere: each dispatcher is allowed to try at once.
    for d in dispatchers:
        d.lease_for = timedelta(seconds=-1)
    threads = [threading.Thread(target=d.run, args=(world.now,)) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recipients = [str(m["To"]) for m in world.transport.messages]
    assert sorted(recipients) == sorted(f"r{n}@example.org" for n in range(12))


def test_service_jobs_are_configured_for_downtime(world: World) -> None:
    schedule = ScheduleConfig(
        sources=("seeds/",), ingest_cron="15 */3 * * *", dispatch_minutes=5, grace_hours=6
    )
    service = Service(
        factory=world.factory,
        schedule=schedule,
        dispatcher=world.dispatcher(),
        ingest=lambda sources, now: [],
        clock=lambda: world.now,
    )
    jobs = {job.id: job for job in service.scheduler.get_jobs()}
    assert set(jobs) == {"ingest", "dispatch"}
    for job in jobs.values():
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 6 * 3600)
    assert jobs["dispatch"].next_run_time == world.now  # runs once at start-up
    assert str(jobs["ingest"].trigger).startswith("cron[")


def test_a_job_stopped_by_the_database_logs_one_line_and_is_recorded(world: World, caplog) -> None:
    def read_only(sources, now):
        raise DatabaseUnavailable("database sqlite:///x is read-only (attempt to write)")

    service = Service(
        factory=world.factory,
        schedule=ScheduleConfig(sources=("seeds/",)),
        dispatcher=world.dispatcher(),
        ingest=read_only,
        clock=lambda: world.now,
    )
    with caplog.at_level(logging.INFO, logger="digest.schedule"):
        service.ingest_job()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "ingest: failed: database sqlite:///x is read-only (attempt to write)")
    ]
    with world.factory() as session:
        run = db.last_job_run(session, "ingest")
    assert run is not None and not run.ok
    assert run.summary == "failed: database sqlite:///x is read-only (attempt to write)"


def test_a_subscriber_whose_timezone_no_longer_loads_is_left_out_alone(
    world: World, caplog
) -> None:
    world.add("mars@example.org", "UTC", 7)
    world.add("ada@example.org", "UTC", 7)
    with db.transaction(world.factory) as session:
        db.find_subscriber(session, "mars@example.org").timezone = "Mars/Olympus"
    world.now = datetime(2026, 1, 1, 7, 5, tzinfo=UTC)
    with caplog.at_level(logging.WARNING, logger="digest.schedule"):
        report = world.dispatcher().run(world.now)
    assert report is not None and report.sent == 1
    assert list(world.sent()) == ["ada@example.org"]
    assert [r.getMessage() for r in caplog.records] == [
        "mars@example.org left out: unknown timezone 'Mars/Olympus' (fix it with: digest "
        "subscribe mars@example.org --topic ... --timezone Europe/Paris)"
    ]


@freeze_time("2026-11-25 06:30:00")
def test_status_shows_next_runs_last_results_due_and_problems(
    cli, tmp_path: Path, monkeypatch, db_url: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[schedule]\nsources = ["seeds/"]\ningest_cron = "0 */3 * * *"\n', encoding="utf-8"
    )
    monkeypatch.setenv("DIGEST_CONFIG", str(config))
    cli(
        "subscribe",
        "soon@example.org",
        "--topic",
        "*",
        "--timezone",
        "Asia/Kolkata",
        "--hour",
        "12",
    )
    cli("subscribe", "later@example.org", "--topic", "*", "--timezone", "UTC", "--hour", "9")
    output = cli("status").output
    # No `digest run` is running: the runs are what one would do once started.
    assert "next runs, once `digest run` starts:\n  ingest    2026-11-25T09:00+00:00\n" in output
    assert "  dispatch  at start-up\ndispatcher: none running\n" in output
    assert "  dispatch  never" in output
    assert "due in the next hour: 1" in output
    assert "  06:30 UTC  soon@example.org (12:00 Asia/Kolkata)" in output
    assert "queued, not sent yet: 0\n" in output
    assert "deferred, unknown, in flight, or failed in the last 24 h: 0" in output
    # After a dispatch that left a deferred row, status reports the run and the row.
    engine = db.open_database(db_url)
    factory = db.session_factory(engine)
    now = datetime(2026, 11, 25, 6, 30, tzinfo=UTC)
    with db.transaction(factory) as session:
        soon = db.find_subscriber(session, "soon@example.org")
        session.add(
            Delivery(
                subscriber=soon,
                digest_date=date(2026, 11, 25),
                status="deferred",
                selected_at=now,
                attempts=2,
                last_reply="451 4.3.0 try later",
                created_at=now,
                updated_at=now,
            )
        )
        later = db.find_subscriber(session, "later@example.org")
        later.status = "bounced"
        for day, reply in (
            (date(2026, 11, 25), "550 5.1.1 no such user"),
            (date(2026, 11, 22), ""),
        ):
            session.add(
                Delivery(
                    subscriber=later,
                    digest_date=day,
                    status="failed",
                    selected_at=now,
                    attempts=1,
                    last_reply=reply or "an old failure, not listed",
                    created_at=now,
                    updated_at=datetime.combine(day, datetime.min.time(), UTC),
                )
            )
        db.record_job_run(session, "dispatch", "host:1", now, now, True, "sent 0, empty 0")
    engine.dispose()
    output = cli("status").output
    assert "  dispatch  at start-up\ndispatcher: none running\n" in output
    # With a dispatcher running, its next dispatch is one interval after the last.
    engine = db.open_database(db_url)
    with db.transaction(db.session_factory(engine)) as session:
        assert db.acquire_lease(session, "dispatcher", "host:1", now, now + timedelta(minutes=15))
    engine.dispose()
    output = cli("status").output
    assert (
        "next runs:\n  ingest    2026-11-25T09:00+00:00\n  dispatch  2026-11-25T06:35+00:00\n"
        in (output)
    )
    assert "dispatcher: host:1 (active until 2026-11-25 06:45 UTC)" in output
    assert "  dispatch  2026-11-25 06:30 UTC ok: sent 0, empty 0" in output
    assert "deferred, unknown, in flight, or failed in the last 24 h: 2" in output
    rows = output.splitlines()[-2:]
    assert rows[0].split() == [
        "soon@example.org",
        "2026-11-25",
        "deferred",
        "2",
        "451",
        "4.3.0",
        "try",
        "later",
    ]
    assert rows[1].split() == [
        "later@example.org",
        "2026-11-25",
        "failed,",
        "bounced",
        "1",
        "550",
        "5.1.1",
        "no",
        "such",
        "user",
    ]
    assert "an old failure" not in output
    assert "queued, not sent yet: 0\n" in output
    # Rows planned and not sent yet (a send that stopped) are counted per date.
    cli("subscribe", "waiting@example.org", "--topic", "*")
    cli("subscribe", "waiting2@example.org", "--topic", "*")
    engine = db.open_database(db_url)
    with db.transaction(db.session_factory(engine)) as session:
        for address, day in (
            ("waiting@example.org", date(2026, 11, 24)),
            ("waiting2@example.org", date(2026, 11, 24)),
            ("waiting@example.org", date(2026, 11, 25)),
        ):
            session.add(
                Delivery(
                    subscriber=db.find_subscriber(session, address),
                    digest_date=day,
                    status="queued",
                    selected_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
    engine.dispose()
    output = cli("status").output
    assert "queued, not sent yet: 3 (2 for 2026-11-24, 1 for 2026-11-25)\n" in output
    # Without sources, the ingest job is not scheduled, and status says why.
    config.write_text("", encoding="utf-8")
    assert (
        "  ingest    not scheduled: no [schedule] sources in the config\n" in cli("status").output
    )


def test_status_counts_a_digest_due_and_not_yet_sent(cli) -> None:
    with freeze_time("2026-11-26 02:00:00"):
        cli("subscribe", "ada@example.org", "--topic", "*", "--timezone", "UTC", "--hour", "2")
    with freeze_time("2026-11-26 02:03:00"):
        output = cli("status").output
        assert "due in the next hour: 1\n  02:00 UTC  ada@example.org (02:00 UTC)\n" in output
        assert cli("send").output.startswith("sent 0, empty 1,")  # nothing ingested
        assert "due in the next hour: 0\n" in cli("status").output


# --- the real process -----------------------------------------------------------------------


def test_sigterm_finishes_the_message_in_flight_and_exits_cleanly(
    cli, seeds: Path, tmp_path: Path, smtp_server, monkeypatch, db_url: str
) -> None:
    # Papers are seen by the send time (the top of this hour): a digest is chosen as of it.
    started = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hour = started.hour
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[smtp]
host = "127.0.0.1"
port = {smtp_server.port}
starttls = false
[site]
secret_key = "test-secret-key-0123456789abcdef"
[schedule]
dispatch_minutes = 1
""",
        encoding="utf-8",
    )
    env = digest_env(tmp_path / "data", db_url, config)
    monkeypatch.setenv("DIGEST_CONFIG", str(config))
    cli("ingest", str(seeds), "--as-of", started.isoformat())
    for n in range(6):
        cli(
            "subscribe",
            f"r{n}@example.org",
            "--topic",
            "*",
            "--timezone",
            "UTC",
            "--hour",
            str(hour),
        )
    smtp_server.handler.delay = 1.0
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not smtp_server.handler.messages:
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "received SIGTERM: finishing the message in flight" in err
    assert "stopped" in err
    engine = db.open_database(db_url)
    with db.session_factory(engine)() as session:
        statuses = [d.status for d in session.scalars(select(Delivery))]
        runs = session.scalars(select(JobRun)).all()
        lease = db.current_lease(session, "dispatcher")
    engine.dispose()
    received = len(smtp_server.handler.messages)
    assert 1 <= received < 6
    assert statuses.count("sent") == received  # the message in flight was recorded
    assert statuses.count("queued") == 6 - received and "sending" not in statuses
    assert [r.job for r in runs] == ["dispatch"] and runs[0].summary.startswith(f"sent {received},")
    assert lease is None  # released on the way out
