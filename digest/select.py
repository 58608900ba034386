"""Select stage: which papers each subscriber gets in the digest of a given local date.

A `SelectionRun` is made once per run and point in time (`now`) and evaluates
each distinct topic query once, however many subscribers follow it;
`run.select(subscriber, digest_date)` then assembles one subscriber's digest
from the cached matches. A run sees only what was known at its `now`: papers
first seen by then and upvote observations made by then, so the digest of a
past date (`digest send --date`, the scheduler's catch-up) is chosen as of
that digest's send time (`selection_time`).

Eligible papers match a topic (`digest.relevance`, which documents the
relevance formula) with ``relevance >= min_relevance`` (a cutoff relative to
the topic's best match in the run, so weak matches don't pad a topic), have
never been sent to this subscriber, and are either

* **new**: first seen after the subscriber's previous digest (at most
  `lookback_days` back; a first digest or a preview looks back the whole window), or
* **trending**: gained at least `min_trending_gain` upvotes in the subscriber's
  period (1 day, or 7 for weekly subscribers): ``gain`` is the latest count at
  `now` minus the latest before the period (or the first one in it: a first
  observation is no gain). The
  `max_trending` papers with the highest Hacker News score
  ``gain / (age_hours + 2) ** gravity`` are shown as trending, new or not (so first
  digests and previews show them too); other new papers show as new, and other old
  ones are left out.

Each topic's papers are ordered by

    score = weight * (1 + 0.1 * log2(1 + upvotes + gain))

(`weight`: the match's relevance, times 1.5 when its title names the query,
`relevance.Match.weight`; `upvotes` as of `now`), the community's signal raising the papers people
upvote without letting it beat relevance: the publication date plays no part.
The `*` topic matches every eligible paper with relevance 1, so it is the
period's papers by upvotes (the Hugging Face view) and may fill the whole digest.

A paper appears once per digest, under the topic it matches best. Caps:
`max_per_topic` per topic (`max_items` for `*`) and `max_items` in all, shared
round-robin between topics, trending papers taking their places first; how
many more papers matched each topic is kept (`Selection.more`) for the email's
"N more matched" line. `record_selection`
stores the content as a `Digest` shared by every subscriber with the same items,
plus this subscriber's `Delivery` row for the date.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from digest import db, ledger, query_plan, relevance
from digest.config import DigestSettings
from digest.models import Delivery, DigestItem, Paper, Subscriber
from digest.query import parse_query

POPULARITY_WEIGHT = 0.1
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
    matched: str = ""  # the words that matched, as the paper writes them, ", "-joined


@dataclass
class Selection:
    """One subscriber's digest for one local date."""

    digest_date: date
    new_since: datetime
    items: list[SelectedItem] = field(default_factory=list)
    as_of: datetime | None = None  # the instant it was chosen as of (the run's now)
    more: dict[str, int] = field(default_factory=dict)  # topic query -> matches left out

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
                    item.matched,
                ]
                for item in self.items
            ],
            sorted(self.more.items()),
        ]
        encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def local_date(now: datetime, timezone: str) -> date:
    """The subscriber's calendar date at `now`."""
    return now.astimezone(ZoneInfo(timezone)).date()


def send_time(subscriber: Subscriber, day: date) -> datetime:
    """The instant of the subscriber's send hour on their local `day` (DST-aware)."""
    zone = ZoneInfo(subscriber.timezone)
    local = datetime.combine(day, time(subscriber.send_hour), tzinfo=zone)
    # fold=0: a repeated hour means its first occurrence; an hour skipped by DST maps,
    # through the offset before the change, to the instant of the change itself.
    return local.astimezone(UTC)


def selection_time(subscriber: Subscriber, day: date, now: datetime) -> datetime:
    """The instant a digest is chosen as of: its send time, or now if that is still ahead."""
    return min(now, send_time(subscriber, day))


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


def ranking_score(relevance: float, upvotes: int | None, gain: int) -> float:
    """Relevance raised by the upvote signal: count and recent gain."""
    votes = max(0, upvotes or 0) + max(0, gain)
    return float(relevance * (1 + POPULARITY_WEIGHT * math.log2(1 + votes)))


@dataclass(frozen=True)
class _Facts:
    first_seen: datetime
    age_hours: float
    upvotes: int | None  # as of the run's now


class SelectionRun:
    """Selection for many subscribers at one `now`, evaluating each topic query once.

    Runs at different instants may share one `corpus` (its statistics and analysed papers).
    """

    def __init__(
        self,
        session: Session,
        now: datetime,
        settings: DigestSettings,
        corpus: relevance.Corpus | None = None,
    ) -> None:
        self.session = session
        self.now = now
        self.settings = settings
        self.corpus = corpus or relevance.Corpus(session)
        self.window = db.Window(
            new_since=now - timedelta(days=settings.lookback_days),
            observed_since=now - WEEK,
            until=now,
        )
        self._matches: dict[str, dict[int, relevance.Match]] = {}
        self._gains: dict[timedelta, dict[int, int]] = {}
        self._facts: dict[int, _Facts] = {}
        self._words: dict[tuple[str, int], str] = {}

    def matches(self, topic: str) -> dict[int, relevance.Match]:
        """Eligible papers matching `topic` above the cutoff, with relevance in (0, 1]."""
        if topic not in self._matches:
            plan = query_plan.plan_query(self.session, parse_query(topic), self.corpus)
            found = relevance.rank(self.session, plan, self.corpus, window=self.window)
            cutoff = self.settings.min_relevance
            self._matches[topic] = {m.paper_id: m for m in found if m.relevance >= cutoff}
            missing = [pid for pid in self._matches[topic] if pid not in self._facts]
            upvotes = db.upvotes_as_of(self.session, missing, self.now)
            for paper_id, paper in db.papers_by_id(self.session, missing).items():
                self._facts[paper_id] = _Facts(
                    paper.first_seen_at, paper_age_hours(paper, self.now), upvotes.get(paper_id)
                )
        return self._matches[topic]

    def _explained(self, item: SelectedItem) -> SelectedItem:
        """The item with the words that matched, as the paper writes them (once per run)."""
        key = (item.topic, item.paper_id)
        if key not in self._words:
            paper = self.session.get(Paper, item.paper_id)
            assert paper is not None
            matched = self.matches(item.topic)[item.paper_id].matched
            self._words[key] = ", ".join(relevance.written_words(paper, matched))
        return replace(item, matched=self._words[key])

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
        if previous is not None and new_since < previous.selected_at <= self.now:
            new_since = previous.selected_at
        gains = self.gains(trend_window(subscriber))

        # Each paper goes under the topic it matches best (the first topic on a tie);
        # any real query beats `*`, which matches everything equally.
        best: dict[int, tuple[bool, float, int, relevance.Match]] = {}
        for position, topic in enumerate(subscriber.topics):
            specific = topic.query != "*"
            for paper_id, match in self.matches(topic.query).items():
                if paper_id in received:
                    continue
                if paper_id not in best or (specific, match.weight) > best[paper_id][:2]:
                    best[paper_id] = (specific, match.weight, position, match)

        # The papers shown as trending: the best `max_trending` by Hacker News score.
        rising = sorted(
            (
                (trending_score(gains[pid], self._facts[pid].age_hours, settings.gravity), pid)
                for pid in best
                if gains.get(pid, 0) >= settings.min_trending_gain
            ),
            reverse=True,
        )
        trending = {pid for _, pid in rising[: min(settings.max_trending, settings.max_items)]}

        per_topic: list[list[SelectedItem]] = [[] for _ in subscriber.topics]
        for paper_id, (_, weight, position, match) in best.items():
            facts = self._facts[paper_id]
            is_new = new_since < facts.first_seen <= self.now
            if paper_id not in trending and not is_new:
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
                    score=ranking_score(weight, facts.upvotes, gain),
                    upvotes=facts.upvotes,
                    upvote_gain=gain,
                )
            )

        def rank(item: SelectedItem) -> tuple[float, int, int]:
            return (-item.score, -(item.upvotes or 0), -item.paper_id)

        # Trending papers take their places first (they are few: max_trending), then
        # the others by score; each topic is shown in score order.
        queues = [
            sorted(items, key=lambda i: (i.kind != "trending", *rank(i))) for items in per_topic
        ]
        caps = [
            settings.max_items if topic.query == "*" else settings.max_per_topic
            for topic in subscriber.topics
        ]
        taken: list[list[SelectedItem]] = [[] for _ in subscriber.topics]
        total = 0
        # Round-robin over the topics so one busy topic cannot crowd out the others.
        while total < settings.max_items and any(
            queue and len(taken[i]) < caps[i] for i, queue in enumerate(queues)
        ):
            for position, queue in enumerate(queues):
                if queue and len(taken[position]) < caps[position] and total < settings.max_items:
                    taken[position].append(queue.pop(0))
                    total += 1

        items = [self._explained(item) for group in taken for item in sorted(group, key=rank)]
        more = {
            topic.query: len(queue)
            for topic, queue in zip(subscriber.topics, queues, strict=True)
            if queue
        }
        return Selection(
            digest_date=digest_date, new_since=new_since, items=items, more=more, as_of=self.now
        )


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
    digest_id = None
    if selection.items or send_empty:

        def items() -> list[dict[str, object]]:
            # A selected item's fields are exactly the stored item's columns.
            return [
                {"position": position, **asdict(item)}
                for position, item in enumerate(selection.items)
            ]

        digest_id = db.get_or_create_digest(
            session,
            selection.digest_date,
            selection.content_hash,
            items,
            now,
            more_matched=json.dumps(selection.more, sort_keys=True, ensure_ascii=False),
        )
    # The next digest's new papers start where this one's knowledge ended.
    delivery = ledger.plan(
        session,
        subscriber_id=subscriber.id,
        digest_date=selection.digest_date,
        digest_id=digest_id,
        selected_at=selection.as_of or now,
        now=now,
    )
    return delivery


@dataclass(frozen=True)
class DigestContent:
    """What a subscriber gets on a date: the items, a key naming that content, and how
    many more papers matched each topic than it shows."""

    items: Sequence[SelectedItem] | Sequence[DigestItem]
    key: str
    more: Mapping[str, int] = field(default_factory=dict)
    digest_id: int | None = None  # the stored digest, once it was planned


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
    date is seen as of its send time) and the content. `digest preview` and the
    web's preview pages run exactly this.
    """
    day = digest_date or local_date(now, subscriber.timezone)
    if digest_date is not None:
        now = selection_time(subscriber, day, now)
    delivery = db.find_delivery(session, subscriber.id, day) if subscriber.id else None
    if delivery is not None and delivery.digest is not None:
        stored = delivery.digest
        more = json.loads(stored.more_matched or "{}")
        return day, now, DigestContent(stored.items, stored.content_hash, more, stored.id)
    selection = SelectionRun(session, now, settings).select(subscriber, day)
    return day, now, DigestContent(selection.items, selection.content_hash, selection.more)


def sends_on(subscriber: Subscriber, day: date) -> bool:
    """Whether `day` is one of the subscriber's digest days (every day, or their weekday)."""
    return subscriber.weekday is None or day.weekday() == subscriber.weekday


def is_due_today(subscriber: Subscriber, now: datetime) -> bool:
    """Whether an active subscriber gets a digest on their current local date."""
    return subscriber.status == "active" and sends_on(
        subscriber, local_date(now, subscriber.timezone)
    )
