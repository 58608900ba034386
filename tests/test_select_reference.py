"""The fast selection (each topic ranked once per run, walked up to the caps, shared
between subscribers) against a straightforward reference that scores every match of
every topic for each subscriber, over the real seeds and many randomized subscribers,
received papers, previous digests and settings."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bench.synthetic import REALISTIC_TOPICS
from digest import db, relevance
from digest.config import DigestSettings
from digest.days import trend_window
from digest.ingest import ingest_inputs
from digest.models import Delivery, Paper, Subscriber, Topic, UpvoteObservation
from digest.plan import plan_deliveries
from digest.ranking import ranking_score, trending_score, votes
from digest.select import (
    TRENDING_MIN_RELEVANCE,
    History,
    SelectedItem,
    Selection,
    SelectionRun,
    histories,
)
from digest.subscribers import subscribe
from tests.conftest import SEEDS

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
POOL = [*REALISTIC_TOPICS, "no such topic zyzzyva"]  # `*` among them
SETTINGS = [
    DigestSettings(),
    DigestSettings(max_items=5, max_per_topic=2, max_trending=3),
    DigestSettings(max_items=3, max_per_topic=10, max_trending=0),
    DigestSettings(max_items=50, max_per_topic=40, max_trending=10, min_relevance=0.1),
    DigestSettings(max_items=8, max_per_topic=3, max_trending=8, min_trending_gain=4),
]


def reference(
    run: SelectionRun, subscriber: Subscriber, digest_date: date, history: History
) -> Selection:
    """The selection as select.py's docstring defines it, computed the plain way."""
    settings = run.settings
    received = history.received
    new_since = run.window.new_since
    previous = history.previous_selected_at
    if previous is not None and new_since < previous <= run.now:
        new_since = previous
    # Each topic's new papers start at the previous digest, or at the window's start for a
    # topic added after the topics it was chosen with (and for every topic of a first digest).
    until = history.previous_topics_until
    since = [
        run.window.new_since if until is not None and topic.added_at > until else new_since
        for topic in subscriber.topics
    ]
    gains = run.gains(trend_window(subscriber))
    # Where each paper goes: `best` of all its topics (if it trends), `best_new` of the
    # topics it is new in (if not).
    best: dict[int, tuple[bool, float, int, relevance.Match]] = {}
    best_new: dict[int, tuple[bool, float, int, relevance.Match]] = {}
    for position, topic in enumerate(subscriber.topics):
        specific = topic.query != "*"
        for paper_id, match in run.matches(topic.query).items():
            if paper_id in received:
                continue
            if paper_id not in best or (specific, match.weight) > best[paper_id][:2]:
                best[paper_id] = (specific, match.weight, position, match)
            if not since[position] < run.facts[paper_id].first_seen <= run.now:
                continue
            if paper_id not in best_new or (specific, match.weight) > best_new[paper_id][:2]:
                best_new[paper_id] = (specific, match.weight, position, match)
    clear = {
        pid
        for topic in subscriber.topics
        for pid, match in run.matches(topic.query).items()
        if match.relevance >= TRENDING_MIN_RELEVANCE
    }
    rising = sorted(
        (
            (trending_score(gains[pid], run.facts[pid].age_hours, settings.gravity), pid)
            for pid in best
            if gains.get(pid, 0) >= settings.min_trending_gain and pid in clear
        ),
        reverse=True,
    )
    # Each topic's strongest upvote signal, over all its matches (received or not).
    most = [
        max(
            (votes(run.facts[pid].upvotes, max(gains.get(pid, 0), 0)) for pid in matches), default=0
        )
        for matches in (run.matches(topic.query) for topic in subscriber.topics)
    ]
    trending = {pid for _, pid in rising[: min(settings.max_trending, settings.max_items)]}
    per_topic: list[list[SelectedItem]] = [[] for _ in subscriber.topics]
    for paper_id in best:
        facts = run.facts[paper_id]
        if paper_id in trending:
            _, weight, position, match = best[paper_id]
        elif paper_id in best_new:
            _, weight, position, match = best_new[paper_id]
        else:
            continue
        topic = subscriber.topics[position]
        gain = max(gains.get(paper_id, 0), 0)
        per_topic[position].append(
            SelectedItem(
                paper_id=paper_id,
                kind="trending" if paper_id in trending else "new",
                topic=topic.query,
                topic_label=topic.label,
                relevance=match.relevance,
                score=ranking_score(weight, votes(facts.upvotes, gain), most[position]),
                upvotes=facts.upvotes,
                upvote_gain=gain,
            )
        )

    def rank(item: SelectedItem) -> tuple[float, int, int]:
        return (-item.score, -(item.upvotes or 0), -item.paper_id)

    queues = [sorted(i, key=lambda i: (i.kind != "trending", *rank(i))) for i in per_topic]
    caps = [
        settings.max_items if topic.query == "*" else settings.max_per_topic
        for topic in subscriber.topics
    ]
    taken: list[list[SelectedItem]] = [[] for _ in subscriber.topics]
    total = 0
    while total < settings.max_items and any(
        queue and len(taken[i]) < caps[i] for i, queue in enumerate(queues)
    ):
        for position, queue in enumerate(queues):
            if queue and len(taken[position]) < caps[position] and total < settings.max_items:
                taken[position].append(queue.pop(0))
                total += 1
    items = []
    for item in (item for group in taken for item in sorted(group, key=rank)):
        paper = run.session.get(Paper, item.paper_id)
        assert paper is not None
        words = relevance.written_words(paper, run.matches(item.topic)[item.paper_id].matched)
        items.append(
            replace(item, matched=", ".join(words)),
        )
    more = {t.query: len(q) for t, q in zip(subscriber.topics, queues, strict=True) if q}
    return Selection(
        digest_date=digest_date, new_since=new_since, items=items, more=more, as_of=run.now
    )


def bump_upvotes(factory: sessionmaker[Session], folder: Path, rng: random.Random) -> int:
    """Observe more upvotes on some seed papers, 3 days and 2 hours before NOW (HF JSON
    captures of the same papers): gains for the trending papers. How many were bumped."""
    with factory() as session:
        papers = session.execute(
            select(Paper.title, Paper.abstract, UpvoteObservation.upvotes).join(
                UpvoteObservation, UpvoteObservation.paper_id == Paper.id
            )
        ).all()
    chosen = rng.sample(papers, 60)
    for hours, share in ((72, chosen[:40]), (2, chosen[20:])):
        items = [
            {
                "title": title,
                "summary": abstract,
                "paper": {"upvotes": upvotes + rng.randint(1, 40) + hours // 10},
            }
            for title, abstract, upvotes in share
        ]
        path = folder / f"bump-{hours}.json"
        path.write_text(json.dumps(items), encoding="utf-8")
        [summary] = ingest_inputs(
            factory, [str(path)], now=NOW - timedelta(hours=hours), max_bytes=10**7
        )
        assert summary.ok, summary.error
    return len(chosen)


@pytest.fixture
def corpus(factory: sessionmaker[Session], tmp_path: Path) -> sessionmaker[Session]:
    """The seeds, first seen over the 5 days before NOW, with upvote gains on 60 papers."""
    for index, capture in enumerate(sorted(SEEDS.iterdir())):
        ingest_inputs(
            factory, [str(capture)], now=NOW - timedelta(days=5 - index, hours=1), max_bytes=10**8
        )
    assert bump_upvotes(factory, tmp_path, random.Random(7)) == 60
    return factory


def random_subscriber(rng: random.Random, number: int) -> Subscriber:
    """Topics from POOL, some added long ago, some within the last days (some of them after
    the previous digest of `random_history`)."""
    topics = rng.sample(POOL, rng.choice([1, 1, 2, 2, 3, 4]))
    if "*" not in topics and rng.random() < 0.2:
        topics.insert(rng.randint(0, len(topics)), "*")  # along with real queries
    return Subscriber(
        id=number,
        timezone="UTC",
        send_hour=8,
        weekday=rng.choice([None, None, 2]),
        topics=[
            Topic(
                position=i,
                query=query,
                label=rng.choice([None, "Mine"]),
                added_at=NOW - timedelta(hours=rng.choice([1000, 1000, rng.uniform(0, 200)])),
            )
            for i, query in enumerate(topics)
        ],
    )


def random_history(rng: random.Random, run: SelectionRun, subscriber: Subscriber) -> History:
    if rng.random() < 0.3:
        return History()  # a first digest: nothing received
    matched = sorted({pid for t in subscriber.topics for pid in run.matches(t.query)})
    received = set(rng.sample(matched, rng.randint(0, min(len(matched), 30))))
    received |= set(rng.sample(range(1, 700), 5))  # papers outside these topics too
    previous = rng.choice(
        [None, NOW - timedelta(hours=rng.uniform(0, 200)), NOW + timedelta(hours=1)]
    )
    if previous is None:
        return History(frozenset(received))
    # Planned as of its send time, or later (a catch-up).
    planned = previous + timedelta(hours=rng.choice([0, 0, rng.uniform(0, 30)]))
    return History(frozenset(received), previous, planned)


def test_fast_selection_equals_the_reference(corpus: sessionmaker[Session]) -> None:
    rng = random.Random(12)
    compared = items = trending = shared = looked_back = 0
    with corpus() as session:
        for settings in SETTINGS:
            run = SelectionRun(session, NOW, settings)
            for subscriber in [random_subscriber(rng, n) for n in range(160)]:
                history = random_history(rng, run, subscriber)
                # Twice: the second one comes from the run's shared selections.
                for _ in range(2):
                    fast = run.select(subscriber, NOW.date(), history)
                    slow = reference(run, subscriber, NOW.date(), history)
                    assert fast.items == slow.items, [t.query for t in subscriber.topics]
                    assert fast.more == slow.more
                    assert fast.new_since == slow.new_since
                    assert fast.content_hash == slow.content_hash
                compared += 1
                items += len(fast.items)
                trending += sum(item.kind == "trending" for item in fast.items)
                looked_back += sum(
                    item.kind == "new" and run.facts[item.paper_id].first_seen <= fast.new_since
                    for item in fast.items
                )
            shared += len(run._chosen)
    assert compared == 800
    # The randomized cases reach what they are meant to: full digests and trending papers.
    assert items > 3000
    assert trending > 200
    # New papers older than the previous digest, shown under topics added since it.
    assert looked_back > 50
    assert shared < compared


def test_planned_days_equal_the_reference(corpus: sessionmaker[Session]) -> None:
    """Planned over three days, where each day's digests exclude what the previous ones
    sent and start at their selection time, and some subscribers add a topic between
    days: the stored items are the reference's."""
    rng = random.Random(5)
    chosen: dict[str, list[str]] = {}
    with db.transaction(corpus) as session:
        for n in range(40):
            chosen[f"r{n}@example.org"] = rng.sample(POOL[:12], rng.randint(1, 3))
            subscribe(
                session,
                f"r{n}@example.org",
                chosen[f"r{n}@example.org"],
                now=NOW - timedelta(days=9),
            )
    settings = DigestSettings(max_items=6, max_per_topic=3)
    for day in range(3):
        now = NOW + timedelta(days=day) - timedelta(days=2)
        if day:
            with db.transaction(corpus) as session:
                for address in rng.sample(sorted(chosen), 10):
                    extra = [q for q in POOL[:12] if q not in chosen[address]]
                    chosen[address].append(rng.choice(extra))
                    subscribe(session, address, chosen[address], now=now - timedelta(hours=1))
        with db.transaction(corpus) as session:
            due = [(s, now.date()) for s in db.list_subscribers(session, "active")]
            expected = {}
            run = SelectionRun(session, now, settings)
            pairs = [(s.id, d) for s, d in due]
            for (subscriber, digest_date), history in zip(
                due, [histories(session, pairs)[p] for p in pairs], strict=True
            ):
                expected[subscriber.id] = reference(run, subscriber, digest_date, history)
            _, queued, empty = plan_deliveries(session, due, now=now, settings=settings)
            assert queued + empty == 40
            assert empty == sum(1 for s in expected.values() if not s.items)
            for delivery in session.scalars(
                select(Delivery).where(Delivery.digest_date == now.date())
            ):
                selection = expected[delivery.subscriber_id]
                stored = delivery.digest.items if delivery.digest else []
                assert [(i.paper_id, i.kind, i.topic) for i in stored] == [
                    (i.paper_id, i.kind, i.topic) for i in selection.items
                ]
                assert delivery.digest is None or (
                    delivery.digest.content_hash == selection.content_hash
                )
                delivery.status = "sent"
