"""Selection over several days of real ingests: new vs trending, no repeats, caps, timezones."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from digest import db
from digest.config import DigestSettings
from digest.days import local_date
from digest.ingest import ingest_inputs
from digest.models import Delivery, Digest, Subscriber, Topic
from digest.plan import plan_deliveries, record_selection
from digest.ranking import ranking_score, trending_score, upvote_gain, votes
from digest.select import TRENDING_MIN_RELEVANCE, SelectionRun
from digest.subscribers import subscribe

DAY1 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
SETTINGS = DigestSettings()


class Feed:
    """Writes HF daily_papers JSON captures and ingests them at chosen times."""

    def __init__(self, factory: sessionmaker[Session], folder: Path) -> None:
        self.factory = factory
        self.folder = folder
        self.count = 0

    def ingest(self, now: datetime, papers: list[tuple[str, str, int]], *, about: str = "") -> None:
        """papers: (arxiv id, title, upvotes)."""
        items = [
            {
                "title": title,
                "summary": f"We study {about or title.lower()} in depth.",
                "paper": {
                    "id": arxiv_id,
                    "upvotes": upvotes,
                    "publishedAt": (now - timedelta(days=1)).isoformat(),
                    "authors": [{"name": "A. Author"}],
                },
            }
            for arxiv_id, title, upvotes in papers
        ]
        self.count += 1
        path = self.folder / f"capture{self.count}.json"
        path.write_text(json.dumps(items), encoding="utf-8")
        [summary] = ingest_inputs(self.factory, [str(path)], now=now, max_bytes=10**7)
        assert summary.ok, summary.error


@pytest.fixture
def feed(factory, tmp_path: Path) -> Feed:
    return Feed(factory, tmp_path)


def add(factory, email: str, *topics: str, now: datetime = DAY1 - timedelta(days=30), **options):
    with db.transaction(factory) as session:
        subscribe(session, email, list(topics), now=now, **options)


def run_day(
    factory, now: datetime, settings: DigestSettings = SETTINGS, mark: str = "sent"
) -> dict[str, list[tuple[str, str, str, int]]]:
    """Select and record every active subscriber's digest at `now`; mark the deliveries.

    Returns email -> [(arxiv id, kind, topic, upvote gain)].
    """
    out = {}
    with db.transaction(factory) as session:
        run = SelectionRun(session, now, settings)
        for subscriber in db.list_subscribers(session, "active"):
            selection = run.select(subscriber, local_date(now, subscriber.timezone))
            delivery = db.find_delivery(
                session, subscriber.id, selection.digest_date
            ) or record_selection(session, subscriber, selection, now, settings.send_empty)
            if delivery.status == "queued":
                delivery.status = mark
            papers = db.papers_by_id(session, [item.paper_id for item in selection.items])
            out[subscriber.email] = [
                (papers[i.paper_id].arxiv_id, i.kind, i.topic, i.upvote_gain)
                for i in selection.items
            ]
    return out


def test_new_and_trending_over_three_days(factory, feed: Feed) -> None:
    # An older paper, first seen long before the lookback window.
    feed.ingest(DAY1 - timedelta(days=20), [("2602.00001", "Old Diffusion Survey", 5)])
    add(factory, "ada@example.org", "diffusion")
    feed.ingest(
        DAY1 - timedelta(hours=2),
        [("2603.00001", "Diffusion Transformers", 1), ("2603.00002", "Robot Diffusion", 3)],
    )
    day1 = run_day(factory, DAY1)
    # First sight of a count is not a gain: 3 and 1 upvotes, gained 0; equally relevant,
    # the more upvoted first.
    assert day1["ada@example.org"] == [
        ("2603.00002", "new", "diffusion", 0),
        ("2603.00001", "new", "diffusion", 0),
    ]
    # Day 2: a new paper arrives; the old one and a day-1 paper gain upvotes.
    feed.ingest(
        DAY1 + timedelta(hours=20),
        [
            ("2603.00003", "Video Diffusion", 0),
            ("2602.00001", "Old Diffusion Survey", 30),
            ("2603.00001", "Diffusion Transformers", 50),
        ],
    )
    day2 = run_day(factory, DAY1 + timedelta(days=1))
    # 2603.00001 gained 49 but was sent on day 1: never again. The old survey trends
    # (+25; relevance 0.75, its title is longer), yet the new paper, the best match
    # (relevance 1), goes first: the upvote boost is at most a fifth,
    # 1 + 0.2 * ln(1 + 30 + 25) / ln(1 + 50 + 49) = 1.17 (2603.00001 has the most).
    assert day2["ada@example.org"] == [
        ("2603.00003", "new", "diffusion", 0),
        ("2602.00001", "trending", "diffusion", 25),
    ]
    # Day 3: everything keeps gaining, but all of it was sent already.
    feed.ingest(
        DAY1 + timedelta(days=1, hours=20),
        [("2602.00001", "Old Diffusion Survey", 90), ("2603.00003", "Video Diffusion", 40)],
    )
    assert run_day(factory, DAY1 + timedelta(days=2))["ada@example.org"] == []


def test_first_digest_looks_back_over_the_window(factory, feed: Feed) -> None:
    feed.ingest(DAY1 - timedelta(days=8), [("2603.00010", "Ancient Diffusion", 0)])
    feed.ingest(DAY1 - timedelta(days=6), [("2603.00011", "Recent Diffusion", 0)])
    add(factory, "new@example.org", "diffusion", now=DAY1)
    assert [p for p, *_ in run_day(factory, DAY1)["new@example.org"]] == ["2603.00011"]
    shorter = replace(SETTINGS, lookback_days=3)
    add(factory, "short@example.org", "diffusion", now=DAY1)
    later = DAY1 + timedelta(days=1)
    assert run_day(factory, later, shorter).get("short@example.org") == []


def test_papers_seen_between_digests_are_new_next_time(factory, feed: Feed) -> None:
    add(factory, "ada@example.org", "diffusion")
    feed.ingest(DAY1 - timedelta(hours=1), [("2603.00020", "Morning Diffusion", 0)])
    assert len(run_day(factory, DAY1)["ada@example.org"]) == 1
    feed.ingest(DAY1 + timedelta(hours=1), [("2603.00021", "Afternoon Diffusion", 0)])
    day2 = run_day(factory, DAY1 + timedelta(days=1))
    assert [p for p, *_ in day2["ada@example.org"]] == ["2603.00021"]


def test_undelivered_digests_do_not_count_as_received(factory, feed: Feed) -> None:
    add(factory, "ada@example.org", "diffusion")
    feed.ingest(DAY1 - timedelta(hours=1), [("2603.00030", "Diffusion A", 0)])
    assert len(run_day(factory, DAY1, mark="failed")["ada@example.org"]) == 1
    # The failed day-1 digest never arrived: its paper is still new on day 2.
    day2 = run_day(factory, DAY1 + timedelta(days=1))
    assert [p for p, *_ in day2["ada@example.org"]] == ["2603.00030"]


def test_a_paper_matching_two_topics_appears_once_under_the_best(factory, feed: Feed) -> None:
    add(factory, "ada@example.org", "Robots=robot", "Diffusion=diffusion")
    feed.ingest(
        DAY1 - timedelta(hours=1),
        [("2603.00040", "Robot Arms", 0), ("2603.00041", "Diffusion Models", 0)],
    )
    feed.ingest(
        DAY1 - timedelta(hours=1),
        [("2603.00042", "Robot Arms for Robot Tasks", 0), ("2603.00043", "Diffusion Maps", 0)],
        about="robot arms trained with diffusion",
    )
    items = run_day(factory, DAY1)["ada@example.org"]
    topics = {paper: topic for paper, _, topic, _ in items}
    # 2603.00042 matches both, "robot" in its title and "diffusion" once in its abstract.
    assert topics == {
        "2603.00040": "robot",
        "2603.00041": "diffusion",
        "2603.00042": "robot",
        "2603.00043": "diffusion",
    }


def test_caps_per_topic_in_total_and_for_trending(factory, feed: Feed) -> None:
    feed.ingest(
        DAY1 - timedelta(days=20),
        [(f"2601.{i:05d}", f"Graph Paper {i}", 1) for i in range(6)],
    )
    feed.ingest(
        DAY1 - timedelta(hours=1),
        [(f"2603.{i:05d}", f"Graph Paper {i}", i) for i in range(100, 130)]
        + [(f"2603.{i:05d}", f"Speech Paper {i}", i) for i in range(200, 205)]
        + [(f"2601.{i:05d}", f"Graph Paper {i}", 10 + i) for i in range(6)],
    )
    add(factory, "ada@example.org", "graph", "speech")
    # Per-topic cap: graph stops at 8 of its 36, speech has only 5.
    roomy = replace(SETTINGS, max_items=20, max_per_topic=8, max_trending=2)
    items = run_day(factory, DAY1, roomy)["ada@example.org"]
    assert [topic for _, _, topic, _ in items] == ["graph"] * 8 + ["speech"] * 5
    # Trending: the 2 best Hacker News scores among the papers that gained (the old graph
    # papers; a first count is no gain); they take their places first, then the new
    # papers by score (equally relevant: by upvotes), each topic shown in score order.
    assert [(p, gain) for p, kind, _, gain in items if kind == "trending"] == [
        ("2601.00005", 14),
        ("2601.00004", 13),
    ]
    assert [p for p, *_ in items[:8]] == [f"2603.{i:05d}" for i in range(129, 123, -1)] + [
        "2601.00005",
        "2601.00004",
    ]
    with factory() as session:
        digest = session.scalars(select(Digest)).one()
        # 30 new and 2 trending graph papers, 8 shown; 4 old ones are neither.
        assert json.loads(digest.more_matched) == {"graph": 24}
    # Total cap: 10 items, shared round-robin so speech is not crowded out.
    tight = replace(SETTINGS, max_items=10, max_per_topic=8, max_trending=2)
    items = run_day(factory, DAY1, tight)["ada@example.org"]
    assert [topic for _, _, topic, _ in items] == ["graph"] * 5 + ["speech"] * 5
    # No trending at all when max_trending is 0.
    none = replace(SETTINGS, max_trending=0)
    assert all(kind == "new" for _, kind, _, _ in run_day(factory, DAY1, none)["ada@example.org"])


def test_local_dates_in_far_apart_timezones(factory, feed: Feed) -> None:
    now = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)
    assert local_date(now, "Pacific/Auckland") == date(2026, 11, 26)  # UTC+13 (NZDT)
    assert local_date(now, "America/Los_Angeles") == date(2026, 11, 25)  # 03:00 PST
    assert local_date(now, "Asia/Kolkata") == date(2026, 11, 25)  # 16:30 IST
    assert local_date(datetime(2026, 11, 25, 18, 30, tzinfo=UTC), "Asia/Kolkata") == date(
        2026, 11, 26
    )
    add(factory, "nz@example.org", "diffusion", timezone="Pacific/Auckland")
    add(factory, "la@example.org", "diffusion", timezone="America/Los_Angeles")
    feed.ingest(now - timedelta(hours=1), [("2611.00001", "Diffusion Today", 0)])
    run_day(factory, now)
    with factory() as session:
        dates = {d.subscriber.email: d.digest_date for d in session.scalars(select(Delivery)).all()}
    assert dates == {"nz@example.org": date(2026, 11, 26), "la@example.org": date(2026, 11, 25)}
    # A second run on the same local date keeps the one delivery per subscriber and day.
    run_day(factory, now + timedelta(hours=2))
    with factory() as session:
        assert len(session.scalars(select(Delivery)).all()) == 2


def test_weekly_subscribers_look_back_a_week_for_trending(factory, feed: Feed) -> None:
    feed.ingest(DAY1 - timedelta(days=30), [("2601.00100", "Old Speech Model", 2)])
    feed.ingest(DAY1 - timedelta(days=3), [("2601.00100", "Old Speech Model", 12)])
    add(factory, "weekly@example.org", "speech", weekday=0)
    add(factory, "daily@example.org", "speech")
    out = run_day(factory, DAY1)
    assert out["weekly@example.org"] == [("2601.00100", "trending", "speech", 10)]
    assert out["daily@example.org"] == []


def test_identical_subscribers_share_one_stored_digest(factory, feed: Feed) -> None:
    for name in ("a", "b", "c"):
        add(factory, f"{name}@example.org", "diffusion", "speech")
    add(factory, "d@example.org", "speech")
    feed.ingest(
        DAY1 - timedelta(hours=1),
        [("2603.00050", "Diffusion One", 0), ("2603.00051", "Speech One", 0)],
    )
    run_day(factory, DAY1)
    with factory() as session:
        deliveries = {
            d.subscriber.email: d.digest_id for d in session.scalars(select(Delivery)).all()
        }
        assert len(session.scalars(select(Digest)).all()) == 2
    assert deliveries["a@example.org"] == deliveries["b@example.org"] == deliveries["c@example.org"]
    assert deliveries["d@example.org"] != deliveries["a@example.org"]


def test_nothing_selected_means_no_digest_unless_configured(factory, feed: Feed) -> None:
    add(factory, "quiet@example.org", "astrophysics")
    feed.ingest(DAY1 - timedelta(hours=1), [("2603.00060", "Diffusion Only", 0)])
    run_day(factory, DAY1)
    run_day(factory, DAY1 + timedelta(days=1), replace(SETTINGS, send_empty=True))
    with factory() as session:
        rows = session.scalars(select(Delivery).order_by(Delivery.digest_date)).all()
        assert [(d.status, d.digest_id is None) for d in rows] == [("empty", True), ("sent", False)]
        assert rows[1].digest is not None and rows[1].digest.items == []


def test_topic_queries_run_once_per_run_whatever_the_number_of_subscribers(
    factory, feed: Feed, engine
) -> None:
    feed.ingest(
        DAY1 - timedelta(hours=1),
        [
            (f"2603.{i:05d}", f"{word} paper {i}", i)
            for i, word in enumerate(["Graph", "Speech", "Vision"] * 5)
        ],
    )
    fts_queries: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if "papers_fts MATCH" in statement or statement.startswith("SELECT id FROM papers WHERE"):
            fts_queries.append(statement)

    topics = [("graph",), ("speech", "vision"), ("*",), ("graph", "speech")]
    for n in range(60):
        add(factory, f"user{n}@example.org", *topics[n % len(topics)])
    event.listen(engine, "before_cursor_execute", count)
    try:
        out = run_day(factory, DAY1)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(out) == 60
    assert len(fts_queries) == 4  # graph, speech, vision, *
    assert len({tuple(v) for v in out.values()}) == 4


def test_a_run_keeps_the_combinations_used_last_and_chooses_the_same(
    factory, feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed.ingest(
        DAY1 - timedelta(hours=1),
        [
            (f"2603.{i:05d}", f"{word} paper {i}", i)
            for i, word in enumerate(["Graph", "Speech"] * 4)
        ],
    )
    # Subscribers in id order: A, B, A, C, A.
    combinations = [("graph",), ("speech",), ("graph",), ("graph", "speech"), ("graph",)]
    for n, topics in enumerate(combinations):
        add(factory, f"user{n}@example.org", *topics)
    chosen_calls: list[int] = []
    choose = SelectionRun._choose

    def counted(self, *args, **kwargs):
        chosen_calls.append(1)
        return choose(self, *args, **kwargs)

    monkeypatch.setattr(SelectionRun, "_choose", counted)

    def chosen(entries: int) -> dict[int, list[tuple[int, str, str]]]:
        monkeypatch.setattr("digest.select.CACHE_ENTRIES", entries)
        chosen_calls.clear()
        with factory() as session:
            run = SelectionRun(session, DAY1, SETTINGS)
            return {
                s.id: [(i.paper_id, i.kind, i.topic) for i in run.select(s, DAY1.date()).items]
                for s in db.list_subscribers(session, "active")
            }

    everything = chosen(4096)
    assert len(chosen_calls) == 3  # A, B and C, each chosen once
    # Keeping two, the least recently used goes first: A stays (A, B, A, C, A: 3 choices).
    assert chosen(2) == everything
    assert len(chosen_calls) == 3
    assert chosen(1) == everything  # kept one at a time: chosen again, the same
    assert len(chosen_calls) == 5


def test_trending_formula() -> None:
    t0 = DAY1
    history = [
        (t0 - timedelta(days=3), 5),
        (t0 - timedelta(hours=30), 9),
        (t0 - timedelta(hours=2), 20),
    ]
    assert upvote_gain(history, t0 - timedelta(days=1), t0) == 11
    # No observation before the window: the first one in it is the baseline.
    assert upvote_gain(history, t0 - timedelta(days=7), t0) == 15
    assert upvote_gain(history[2:], t0 - timedelta(days=1), t0) == 0  # one observation
    assert upvote_gain([], t0 - timedelta(days=1), t0) == 0
    assert upvote_gain(history, t0 - timedelta(hours=1), t0) == 0
    assert trending_score(10, 0, 1.8) == pytest.approx(10 / 2**1.8)
    # Older papers need more upvotes for the same score.
    assert trending_score(10, 48, 1.8) < trending_score(10, 24, 1.8) < trending_score(5, 1, 1.8)


def test_ranking_formula_bounds_the_upvote_boost() -> None:
    # The topic's most upvoted match gains a fifth, others by their log share of it.
    assert ranking_score(1.0, 0, 100) == 1.0
    assert ranking_score(1.0, 100, 100) == pytest.approx(1.2)
    assert ranking_score(1.5, 9, 99) == pytest.approx(1.5 * (1 + 0.2 * 0.5))
    # No boost when no match has any upvotes.
    assert ranking_score(0.7, 0, 0) == 0.7
    # Whatever the counts, a match cannot overtake one more than a fifth more relevant.
    assert ranking_score(0.8, 10**6, 10**6) < ranking_score(0.97, 0, 10**6)
    assert votes(None, 4) == 4 and votes(12, -3) == 12 and votes(-1, 0) == 0


def test_weak_matches_do_not_trend(factory, feed: Feed) -> None:
    # Two papers gain 40 upvotes: one is about robots, the other mentions a robot once in a
    # long abstract about something else (relevance below TRENDING_MIN_RELEVANCE).
    feed.ingest(
        DAY1 - timedelta(days=20),
        [("2601.00300", "Robot Grasping", 2)],
    )
    feed.ingest(
        DAY1 - timedelta(days=20),
        [("2601.00301", "Protein Folding at Scale", 2)],
        about="protein folding with large models on accelerators, with a robot arm used "
        "once for sample handling, and detailed studies of folding kinetics, folding "
        "energy landscapes, folding benchmarks and folding datasets",
    )
    feed.ingest(
        DAY1 - timedelta(hours=3),
        [("2601.00300", "Robot Grasping", 42), ("2601.00301", "Protein Folding at Scale", 42)],
    )
    add(factory, "ada@example.org", "robot", now=DAY1)
    with factory() as session:
        matches = SelectionRun(session, DAY1, SETTINGS).matches("robot")
        weak = db.find_paper_by_reference(session, "2601.00301")
        assert weak is not None
        assert 0 < matches[weak.id].relevance < TRENDING_MIN_RELEVANCE
        # Without the floor, both would trend.
        [subscriber] = db.list_subscribers(session, "active")
        with patch("digest.select.TRENDING_MIN_RELEVANCE", 0.0):
            loose = SelectionRun(session, DAY1, SETTINGS).select(subscriber, DAY1.date())
        assert sorted((i.kind, i.upvote_gain) for i in loose.items) == [("trending", 40)] * 2
    assert run_day(factory, DAY1)["ada@example.org"] == [("2601.00300", "trending", "robot", 40)]


def test_unsubscribed_and_bounced_subscribers_get_nothing(factory, feed: Feed) -> None:
    add(factory, "gone@example.org", "diffusion")
    with db.transaction(factory) as session:
        sub = session.scalars(select(Subscriber)).one()
        sub.status = "bounced"
    feed.ingest(DAY1 - timedelta(hours=1), [("2603.00070", "Diffusion", 0)])
    assert run_day(factory, DAY1) == {}


def more_matched(factory, email: str, day: date) -> dict[str, int]:
    """The "N more matched" counts of the digest stored for `email` on `day`."""
    with factory() as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
        delivery = db.find_delivery(session, subscriber.id, day)
        return json.loads(delivery.digest.more_matched) if delivery.digest else {}


def test_a_topic_added_later_looks_back_like_a_first_digest(factory, feed: Feed) -> None:
    """A topic's first digest after it was added shows its best papers of the whole window,
    as a first digest would; the other topics only papers new since the previous digest;
    no paper twice. A renamed label is the same topic; an edited query is a new one."""
    settings = replace(SETTINGS, max_per_topic=2)
    feed.ingest(DAY1 - timedelta(days=20), [("2602.00001", "Robot Survey", 9)])  # too old
    feed.ingest(
        DAY1 - timedelta(days=3),
        [
            ("2602.00010", "Robot Grasping", 8),
            ("2602.00011", "Robot Navigation", 5),
            ("2602.00012", "Robot Locomotion", 3),
            ("2602.00013", "Robot Diffusion", 9),
            ("2602.00020", "Diffusion Transformers", 7),
            ("2602.00021", "Video Diffusion", 4),
        ],
    )
    add(factory, "ada@example.org", "diffusion")
    day1 = run_day(factory, DAY1, settings)["ada@example.org"]
    # A first digest: the window's best two (by upvotes, equally relevant), one left out.
    assert day1 == [("2602.00013", "new", "diffusion", 0), ("2602.00020", "new", "diffusion", 0)]
    assert more_matched(factory, "ada@example.org", DAY1.date()) == {"diffusion": 1}

    feed.ingest(
        DAY1 + timedelta(hours=20),
        [("2603.00030", "Diffusion Distillation", 0), ("2603.00031", "Robot Arms", 0)],
    )
    add(factory, "ada@example.org", "diffusion", "robot", now=DAY1 + timedelta(hours=22))
    day2 = run_day(factory, DAY1 + timedelta(days=1), settings)["ada@example.org"]
    # diffusion: only the paper new since day 1 (not 2602.00021, left out then); robot,
    # added since: its best papers of the window, those of three days ago first, but not
    # 2602.00013, sent on day 1 (under diffusion), nor the 20-day-old survey.
    assert day2 == [
        ("2603.00030", "new", "diffusion", 0),
        ("2602.00010", "new", "robot", 0),
        ("2602.00011", "new", "robot", 0),
    ]
    assert more_matched(factory, "ada@example.org", DAY1.date() + timedelta(days=1)) == {
        "robot": 2  # 2602.00012 and 2603.00031
    }

    # Day 3: robot is no longer a new topic, and a new label keeps diffusion as it was.
    feed.ingest(DAY1 + timedelta(days=1, hours=20), [("2603.00040", "Robot Hands", 0)])
    renamed = DAY1 + timedelta(days=1, hours=22)
    add(factory, "ada@example.org", "Diffusion=diffusion", "robot", now=renamed)
    day3 = run_day(factory, DAY1 + timedelta(days=2), settings)["ada@example.org"]
    assert day3 == [("2603.00040", "new", "robot", 0)]

    # Day 4: an edited query is a new topic: it looks back, without what was sent.
    edited = DAY1 + timedelta(days=2, hours=22)
    add(factory, "ada@example.org", "Diffusion=diffusion", "robot OR locomotion", now=edited)
    day4 = run_day(factory, DAY1 + timedelta(days=3), settings)["ada@example.org"]
    assert day4 == [
        ("2602.00012", "new", "robot OR locomotion", 0),
        ("2603.00031", "new", "robot OR locomotion", 0),
    ]
    sent = [paper for day in (day1, day2, day3, day4) for paper, *_ in day]
    assert len(sent) == len(set(sent)) == 8
    with factory() as session:
        topics = session.scalars(select(Topic).order_by(Topic.position)).all()
        assert [(t.query, t.label, t.added_at) for t in topics] == [
            ("diffusion", "Diffusion", DAY1 - timedelta(days=30)),
            ("robot OR locomotion", None, edited),
        ]


def test_an_older_paper_goes_under_the_best_added_topic_it_is_new_in(factory, feed: Feed) -> None:
    """A paper left out by an old topic's cap is new only in the topics added since: it
    shows under the best of those, once, though the old topic matches it as well."""
    settings = replace(SETTINGS, max_per_topic=1)
    feed.ingest(
        DAY1 - timedelta(days=3),
        [("2602.00050", "Robot Arms", 50), ("2602.00051", "Robot Grasping", 0)],
    )
    add(factory, "ada@example.org", "robot")
    assert run_day(factory, DAY1, settings)["ada@example.org"] == [
        ("2602.00050", "new", "robot", 0)
    ]
    added = DAY1 + timedelta(hours=2)
    add(factory, "ada@example.org", "robot", "grasping", "robot grasping", now=added)
    day2 = run_day(factory, DAY1 + timedelta(days=1), settings)["ada@example.org"]
    # As relevant to all three (its title names each): the first topic it is new in.
    assert day2 == [("2602.00051", "new", "grasping", 0)]
    assert more_matched(factory, "ada@example.org", DAY1.date() + timedelta(days=1)) == {}


def test_a_topic_planned_in_a_catch_up_digest_is_not_looked_back_again(factory, feed: Feed) -> None:
    """A digest chosen as of its send time, before the subscriber joined, but planned
    after: its topics were in it, so the next digest holds only papers new since."""
    settings = replace(SETTINGS, max_per_topic=2)
    feed.ingest(
        DAY1 - timedelta(days=3),
        [(f"2602.{n:05d}", f"Diffusion Paper {n}", n) for n in range(60, 64)],
    )
    joined = DAY1 + timedelta(hours=2)  # 08:00 UTC: after the 06:00 send time
    add(factory, "ada@example.org", "diffusion", now=joined, timezone="UTC", hour=6)

    def plan(now: datetime) -> list[str]:
        with db.transaction(factory) as session:
            ada = db.list_subscribers(session, "active")[0]
            day = local_date(now, "UTC")
            plan_deliveries(session, [(ada, day)], now=now, settings=settings, at_send_time=True)
            delivery = db.find_delivery(session, ada.id, day)
            assert delivery is not None and delivery.digest is not None
            delivery.status = "sent"
            return [item.paper.arxiv_id or "" for item in delivery.digest.items]

    assert plan(joined) == ["2602.00063", "2602.00062"]  # as of 06:00, planned at 08:00
    feed.ingest(DAY1 + timedelta(hours=20), [("2603.00064", "Diffusion Paper 64", 0)])
    assert plan(DAY1 + timedelta(days=1)) == ["2603.00064"]


def test_a_topic_added_while_a_run_reads_subscribers_is_looked_back_once(
    factory, feed: Feed
) -> None:
    """A run starts at DAY1, the subscriber adds a topic a minute later, and the run reads
    their topics after that: the added topic is in that digest (looked back), so the next
    digest does not look back again, although the topic was added after the run's `now`."""
    settings = replace(SETTINGS, max_per_topic=2)
    feed.ingest(
        DAY1 - timedelta(days=3),
        [(f"2602.{n:05d}", f"Robot Paper {n}", n) for n in range(10, 14)],
    )
    add(factory, "ada@example.org", "diffusion")
    add(factory, "ada@example.org", "diffusion", "robot", now=DAY1 + timedelta(minutes=1))

    def plan(now: datetime) -> list[str]:
        with db.transaction(factory) as session:
            ada = db.list_subscribers(session, "active")[0]
            day = local_date(now, "UTC")
            plan_deliveries(session, [(ada, day)], now=now, settings=settings)
            delivery = db.find_delivery(session, ada.id, day)
            assert delivery is not None
            assert delivery.topics_until == DAY1 + timedelta(minutes=1)
            delivery.status = "sent" if delivery.digest else delivery.status
            return (
                sorted(i.paper.arxiv_id or "" for i in delivery.digest.items)
                if delivery.digest
                else []
            )

    assert plan(DAY1) == ["2602.00012", "2602.00013"]  # robot looked back, its best two
    assert plan(DAY1 + timedelta(days=1)) == []  # not again: 10 and 11 are not new
