"""Select stage: which papers each subscriber gets in the digest of a given local date.

A `SelectionRun` is made once per run (one `now`) and evaluates each distinct
topic query once, however many subscribers follow it; `run.select(subscriber,
digest_date)` then assembles one subscriber's digest from the cached matches:

* **New**: papers first seen after the subscriber's previous digest (at most
  `lookback_days` back; a first digest looks back the whole window) that match
  a topic, ranked by ``relevance * (0.5 + 0.5 * recency)``, where relevance is
  the bm25 score divided by the topic's best score in this run and
  ``recency = 0.5 ** (age_days / 7)``.
* **Trending**: matching papers that gained upvotes in the subscriber's period
  (1 day, or 7 for weekly subscribers), ranked Hacker-News style by
  ``trending_score = gain / (age_hours + 2) ** gravity``, where ``gain`` is the
  latest observed count minus the latest count observed before the window
  (or the first one in it: a first observation is no gain) and ``age_hours``
  runs from publication (or first sight when the date is unknown).

A paper appears once per digest, under the topic it matches best, and never
again once a digest holding it was sent (or may have been) to this subscriber.
`record_selection` stores the content as a `Digest` shared by every subscriber
with the same items, plus this subscriber's `Delivery` row for the date.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from digest import db
from digest.config import DigestSettings
from digest.models import Delivery, DigestItem, Paper, Subscriber
from digest.query import parse_query

RECENCY_HALF_LIFE_DAYS = 7.0
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class SelectedItem:
    """A paper in a digest with the reason it is there."""

    paper_id: int
    kind: str  # "new" or "trending"
    topic: str
    topic_label: str | None
    relevance: float
    score: float
    upvotes: int | None
    upvote_gain: int


@dataclass
class Selection:
    """One subscriber's digest for one local date."""

    digest_date: date
    new_since: datetime
    items: list[SelectedItem] = field(default_factory=list)

    @property
    def content_hash(self) -> str:
        """Identical for identical content, so subscribers can share one stored Digest."""
        payload = [
            self.digest_date.isoformat(),
            [
                [
                    item.paper_id,
                    item.kind,
                    item.topic,
                    item.topic_label,
                    round(item.relevance, 6),
                    round(item.score, 6),
                    item.upvotes,
                    item.upvote_gain,
                ]
                for item in self.items
            ],
        ]
        encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def local_date(now: datetime, timezone: str) -> date:
    """The subscriber's calendar date at `now`."""
    return now.astimezone(ZoneInfo(timezone)).date()


def trend_window(subscriber: Subscriber) -> timedelta:
    return DAY if subscriber.weekday is None else WEEK


def upvote_gain(history: list[tuple[datetime, int]], start: datetime, end: datetime) -> int:
    """Latest count at or before `end` minus the latest at or before `start`.

    A gain needs two observations: with none before `start`, the baseline is the
    first one in the window, so a paper's first count is never a gain.
    """
    before: int | None = None
    latest: int | None = None
    for observed_at, upvotes in history:
        if observed_at > end:
            break
        if observed_at <= start or before is None:
            before = upvotes
        latest = upvotes
    return 0 if latest is None or before is None else latest - before


def paper_age_hours(paper: Paper, now: datetime) -> float:
    born = (
        datetime.combine(paper.published_on, time(), tzinfo=UTC)
        if paper.published_on
        else paper.first_seen_at
    )
    return max(0.0, (now - born).total_seconds() / 3600)


def trending_score(gain: int, age_hours: float, gravity: float) -> float:
    """Hacker News gravity: the upvote gain, decayed by the paper's age."""
    return float(gain / (age_hours + 2.0) ** gravity)


def new_score(relevance: float, age_hours: float) -> float:
    recency = 0.5 ** (age_hours / 24 / RECENCY_HALF_LIFE_DAYS)
    return float(relevance * (0.5 + 0.5 * recency))


class SelectionRun:
    """Selection for many subscribers at one `now`, evaluating each topic query once."""

    def __init__(self, session: Session, now: datetime, settings: DigestSettings) -> None:
        self.session = session
        self.now = now
        self.settings = settings
        self.window = db.Window(
            new_since=now - timedelta(days=settings.lookback_days),
            observed_since=now - WEEK,
            until=now,
        )
        self._matches: dict[str, dict[int, float]] = {}
        self._gains: dict[timedelta, dict[int, int]] = {}
        # Per paper, read once per run: (first seen, age in hours, upvotes).
        self._facts: dict[int, tuple[datetime, float, int | None]] = {}

    def matches(self, topic: str) -> dict[int, float]:
        """Eligible papers matching `topic`, with relevance normalized to (0, 1]."""
        if topic not in self._matches:
            found = db.match_papers(self.session, parse_query(topic), window=self.window)
            best = max((score for _, score in found), default=0.0)
            self._matches[topic] = {
                paper_id: (score / best if best > 0 else 1.0) for paper_id, score in found
            }
            missing = [pid for pid in self._matches[topic] if pid not in self._facts]
            for paper_id, paper in db.papers_by_id(self.session, missing).items():
                age = paper_age_hours(paper, self.now)
                self._facts[paper_id] = (paper.first_seen_at, age, paper.upvotes)
        return self._matches[topic]

    def gains(self, window: timedelta) -> dict[int, int]:
        if window not in self._gains:
            start = self.now - window
            history = db.upvote_history(self.session, start, self.now)
            self._gains[window] = {
                paper_id: upvote_gain(observations, start, self.now)
                for paper_id, observations in history.items()
            }
        return self._gains[window]

    def select(self, subscriber: Subscriber, digest_date: date) -> Selection:
        """The digest `subscriber` should get on `digest_date` (their local date)."""
        settings = self.settings
        received = db.received_paper_ids(self.session, subscriber.id, digest_date)
        previous = db.previous_delivery(self.session, subscriber.id, digest_date)
        new_since = self.window.new_since
        if previous is not None and previous.selected_at > new_since:
            new_since = previous.selected_at
        gains = self.gains(trend_window(subscriber))

        # Each paper goes under the topic it matches best (the first topic on a tie);
        # any real query beats `*`, which matches everything equally.
        best: dict[int, tuple[bool, float, int]] = {}
        for position, topic in enumerate(subscriber.topics):
            specific = topic.query != "*"
            for paper_id, relevance in self.matches(topic.query).items():
                if paper_id in received:
                    continue
                if paper_id not in best or (specific, relevance) > best[paper_id][:2]:
                    best[paper_id] = (specific, relevance, position)

        per_topic_new: list[list[SelectedItem]] = [[] for _ in subscriber.topics]
        trending: list[SelectedItem] = []
        for paper_id, (_, relevance, position) in best.items():
            first_seen, age, upvotes = self._facts[paper_id]
            topic = subscriber.topics[position]
            gain = gains.get(paper_id, 0)
            if new_since < first_seen <= self.now:
                kind, score = "new", new_score(relevance, age)
            elif gain >= settings.min_trending_gain:
                kind, score = "trending", trending_score(gain, age, settings.gravity)
            else:
                continue
            item = SelectedItem(
                paper_id=paper_id,
                kind=kind,
                topic=topic.query,
                topic_label=topic.label,
                relevance=relevance,
                score=score,
                upvotes=upvotes,
                upvote_gain=max(gain, 0),
            )
            (per_topic_new[position] if kind == "new" else trending).append(item)

        def rank(item: SelectedItem) -> tuple[float, int, int]:
            return (-item.score, -(item.upvotes or 0), -item.paper_id)

        taken: list[list[SelectedItem]] = [[] for _ in subscriber.topics]
        positions = {topic.query: position for position, topic in enumerate(subscriber.topics)}
        total = 0
        for item in sorted(trending, key=rank):
            position = positions[item.topic]
            if total >= min(settings.max_trending, settings.max_items):
                break
            if len(taken[position]) < settings.max_per_topic:
                taken[position].append(item)
                total += 1
        queues = [sorted(items, key=rank) for items in per_topic_new]
        # Round-robin over the topics so one busy topic cannot crowd out the others.
        while total < settings.max_items and any(queues):
            for position, queue in enumerate(queues):
                if not queue or total >= settings.max_items:
                    continue
                if len(taken[position]) >= settings.max_per_topic:
                    queue.clear()
                    continue
                taken[position].append(queue.pop(0))
                total += 1

        items = [
            item
            for group in taken
            for item in sorted(group, key=lambda i: (i.kind != "new", *rank(i)))
        ]
        return Selection(digest_date=digest_date, new_since=new_since, items=items)


def record_selection(
    session: Session,
    subscriber: Subscriber,
    selection: Selection,
    now: datetime,
    send_empty: bool = False,
) -> Delivery:
    """Store the selection: its shared Digest (if any items) and the subscriber's Delivery.

    A digest is chosen once per subscriber and day: callers look for an existing
    delivery first (`db.find_delivery`), and the unique constraint refuses a second.
    """
    digest = None
    if selection.items or send_empty:

        def items() -> list[DigestItem]:
            # A selected item's fields are exactly the stored item's columns.
            return [
                DigestItem(position=position, **asdict(item))
                for position, item in enumerate(selection.items)
            ]

        digest = db.get_or_create_digest(
            session, selection.digest_date, selection.content_hash, items, now
        )
    delivery = Delivery(
        subscriber_id=subscriber.id,
        digest_date=selection.digest_date,
        digest=digest,
        status="queued" if digest is not None else "empty",
        selected_at=now,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(delivery)
    session.flush()
    return delivery


@dataclass(frozen=True)
class DigestContent:
    """What a subscriber gets on a date: the items, and a key naming that content."""

    items: Sequence[SelectedItem] | Sequence[DigestItem]
    key: str
    digest_id: int | None = None  # the stored digest, once it was planned


def day_close(digest_date: date, timezone: str) -> datetime:
    """The last instant of `digest_date` in `timezone`, in UTC."""
    end = datetime.combine(digest_date, time(23, 59, 59), tzinfo=ZoneInfo(timezone))
    return end.astimezone(UTC)


def digest_content(
    session: Session,
    subscriber: Subscriber,
    digest_date: date | None,
    now: datetime,
    settings: DigestSettings,
) -> tuple[date, datetime, DigestContent]:
    """What `subscriber` receives (or would) on `digest_date` (default: their local today).

    The digest already planned for that date if there is one, else a fresh
    selection; writes nothing. Returns the date, the effective `now` (a past
    date is seen as of its end) and the content. `digest preview` and the
    web's preview pages run exactly this.
    """
    day = digest_date or local_date(now, subscriber.timezone)
    if digest_date is not None:
        now = min(now, day_close(day, subscriber.timezone))
    delivery = db.find_delivery(session, subscriber.id, day) if subscriber.id else None
    if delivery is not None and delivery.digest is not None:
        digest = delivery.digest
        return day, now, DigestContent(digest.items, digest.content_hash, digest.id)
    selection = SelectionRun(session, now, settings).select(subscriber, day)
    return day, now, DigestContent(selection.items, selection.content_hash)


def sends_on(subscriber: Subscriber, day: date) -> bool:
    """Whether `day` is one of the subscriber's digest days (every day, or their weekday)."""
    return subscriber.weekday is None or day.weekday() == subscriber.weekday


def is_due_today(subscriber: Subscriber, now: datetime) -> bool:
    """Whether an active subscriber gets a digest on their current local date."""
    return subscriber.status == "active" and sends_on(
        subscriber, local_date(now, subscriber.timezone)
    )
