"""Select stage: which papers each subscriber gets in the digest of a given local date.

A `SelectionRun` is made once per run and point in time (`now`) and evaluates
each distinct topic query once, however many subscribers follow it, ranking its
matches once per trend period; `run.select(subscriber, digest_date, history)`
then assembles one subscriber's digest by walking their topics' ranked papers up
to the caps (what they received before, `History`, is read in bulk by
`histories`). Subscribers with the same topics, period and new-paper boundaries
who received none of the papers involved share one selection. A run sees only
what was known at its `now`: papers first seen by then and upvote observations
made by then, so the digest of a past date (`digest send --date`, the
scheduler's catch-up) is chosen as of that digest's send time (`days.selection_time`).

Eligible papers match a topic (`digest.relevance`, which documents the
relevance formula) with ``relevance >= min_relevance`` (a cutoff relative to
the topic's best match in the run, so weak matches don't pad a topic), have
never been sent to this subscriber, and are either

* **new**: first seen after the subscriber's previous digest (at most
  `lookback_days` back; a first digest or a preview looks back the whole window, and
  so does a topic's first digest after it was added, `Topic.added_at`, for that topic
  only: its section shows its best recent papers, the other topics' only new ones), or
* **trending**: gained at least `min_trending_gain` upvotes in the subscriber's
  period (1 day, or 7 for weekly subscribers): ``gain`` is the latest count at
  `now` minus the latest before the period (or the first one in it: a first
  observation is no gain). Of the papers that match one of the subscriber's topics
  clearly, with relevance at least 0.5 (`TRENDING_MIN_RELEVANCE`: half as relevant as
  the topic's best match), the `max_trending` with the highest trending score
  (`digest.ranking.trending_score`) are shown as trending, new or not (so first
  digests and previews show them too); other new papers show as new, and other old
  ones are left out. A weak match that gains upvotes does not take a place ahead of
  better matches.

Each topic's papers are ordered by relevance raised by the community's upvote signal
(`digest.ranking.ranking_score`, which documents both formulas): not by date.
The `*` topic matches every eligible paper with relevance 1, so it is the
period's papers by upvotes (the Hugging Face view) and may fill the whole digest.

A paper appears once per digest, under the topic it matches best: a trending one of all
its topics, a new one of those it is new in (a paper older than the previous digest is
new only in a topic added since). Caps:
`max_per_topic` per topic (`max_items` for `*`) and `max_items` in all, shared
round-robin between topics, trending papers taking their places first; how
many more papers matched each topic is kept (`Selection.more`) for the email's
"N more matched" line. `digest.plan.record_selections` stores each content once as
a `Digest` shared by every subscriber with the same items, plus each subscriber's
`Delivery` row for the date, in bulk statements.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import overload

from sqlalchemy.orm import Session

from digest import db, query_plan, relevance
from digest.cache import BoundedCache
from digest.config import DigestSettings
from digest.days import DAY, WEEK, local_date, selection_time, trend_window
from digest.models import DeliveryStatus, DigestItem, Paper, Subscriber
from digest.query import parse_query
from digest.ranking import age_hours, ranking_score, trending_score, upvote_gain, votes

TRENDING_MIN_RELEVANCE = 0.5  # a trending paper matches one of the topics at least this well


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


ITEM_FIELDS = tuple(f.name for f in fields(SelectedItem))


@dataclass
class Selection:
    """One subscriber's digest for one local date."""

    digest_date: date
    new_since: datetime  # where new papers start (a topic added since starts at the window's)
    items: list[SelectedItem] = field(default_factory=list)
    as_of: datetime | None = None  # the instant it was chosen as of (the run's now)
    more: dict[str, int] = field(default_factory=dict)  # topic query -> matches left out
    # The latest time one of the topics it was chosen with was added (`Topic.added_at`):
    # the next digest looks back for a topic added after it.
    topics_until: datetime | None = None
    # The content hash, computed once (or given by the run that chose the same content).
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def content_hash(self) -> str:
        """Identical for identical content, so subscribers can share one stored Digest."""
        if self._hash is None:
            self._hash = content_hash(self.digest_date, content_body(self.items, self.more))
        return self._hash


def content_body(items: Sequence[SelectedItem], more: Mapping[str, int]) -> str:
    """The JSON of a digest's content but its date: what `content_hash` hashes."""
    payload = [
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
            for item in items
        ],
        sorted(more.items()),
    ]
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def content_hash(digest_date: date, body: str) -> str:
    """The hash of the JSON [date, items, more]; `body` is the JSON [items, more]."""
    encoded = f'["{digest_date.isoformat()}",{body[1:]}'
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class History:
    """What a subscriber got before a digest date: the papers they received (or may
    have), never sent again, when their previous digest was chosen as of (where the new
    papers start), and the latest time one of its topics had been added (a topic added
    later was not in it; for a digest stored before topics kept that time, when it was
    planned)."""

    received: frozenset[int] = frozenset()
    previous_selected_at: datetime | None = None
    previous_topics_until: datetime | None = None


def histories(
    session: Session, pairs: Sequence[tuple[int, date]]
) -> dict[tuple[int, date], History]:
    """The `History` of each (subscriber id, digest date), in a few queries for them all."""
    received = db.received_papers(session, pairs)
    previous = db.previous_selections(session, pairs)
    return {
        pair: History(frozenset(received.get(pair, ())), *previous.get(pair, (None, None)))
        for pair in pairs
    }


@dataclass(frozen=True)
class _Facts:
    first_seen: datetime
    age_hours: float
    upvotes: int | None  # as of the run's now


@dataclass(frozen=True)
class _Ranked:
    """One topic's matches ranked once per run and trend window."""

    order: list[int]  # paper ids, best first: score, then upvotes, then the newer id
    place: dict[int, int]  # paper id -> its index in `order`
    score: dict[int, float]
    gain: dict[int, int]  # the upvote gain shown (never negative)
    rising: list[
        tuple[float, int]
    ]  # (trending score, id) of clear matches gaining enough, best first


@dataclass(frozen=True)
class _Topics:
    """A subscriber's topic queries, in their order, with the run's matches."""

    queries: tuple[str, ...]
    matches: list[dict[int, relevance.Match]]

    def best(self, paper_id: int, among: Sequence[frozenset[int]] | None = None) -> int:
        """The position of the topic `paper_id` matches best; the first one on a tie, and
        any real query before `*`, which matches everything equally. With `among` (a set
        of papers per topic), only the topics whose set holds it count; -1 if none does."""
        position, top = -1, (False, 0.0)
        for index, matches in enumerate(self.matches):
            if among is not None and paper_id not in among[index]:
                continue
            match = matches.get(paper_id)
            if match is not None:
                key = (self.queries[index] != "*", match.weight)
                if position < 0 or key > top:
                    position, top = index, key
        return position


@dataclass(frozen=True)
class _Shares:
    """How a topic combination shares the new papers: how many go under each topic, and
    the papers of each real query that go under another one (`*` loses to them all)."""

    counts: list[int]
    elsewhere: list[frozenset[int]]


# Per-run caches keyed by a new-paper boundary or a topic combination hold at most this
# many entries (the least recently used go first), so a run over many subscribers stays
# in flat memory.
CACHE_ENTRIES = 4096
_Chosen = tuple[tuple[SelectedItem, ...], tuple[tuple[str, int], ...], str]  # items, more, body


class SelectionRun:
    """Selection for many subscribers at one `now`, evaluating each topic query once.

    Each topic's matches are ranked once per trend window, and its new papers once per
    new-paper boundary; a subscriber's digest then walks each of their topics' ranked
    papers and stops at the caps. Subscribers with the same topics, period and new-paper
    boundary, who received none of the papers in question, share one selection.
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
        self.capped: set[str] = set()  # topics whose candidates hit relevance.CANDIDATE_LIMIT
        self._gains: dict[timedelta, dict[int, int]] = {}
        self.facts: dict[int, _Facts] = {}
        self._words: dict[tuple[str, int], str] = {}
        self._ranked: dict[tuple[str, timedelta], _Ranked] = {}
        self._new: BoundedCache[tuple[str, timedelta, datetime], tuple[list[int], frozenset[int]]]
        self._new = BoundedCache(CACHE_ENTRIES)
        self._assigned: BoundedCache[
            tuple[tuple[str, ...], timedelta, tuple[datetime, ...]], _Shares
        ]
        self._assigned = BoundedCache(CACHE_ENTRIES)
        self._chosen: BoundedCache[Hashable, _Chosen] = BoundedCache(CACHE_ENTRIES)

    def matches(self, topic: str) -> dict[int, relevance.Match]:
        """Eligible papers matching `topic` above the cutoff, with relevance in (0, 1]."""
        if topic not in self._matches:
            plan = query_plan.plan_query(self.session, parse_query(topic, stored=True), self.corpus)
            found = relevance.rank(self.session, plan, self.corpus, window=self.window)
            cutoff = self.settings.min_relevance
            if isinstance(found, relevance.Ranking) and found.capped:
                self.capped.add(topic)
            self._matches[topic] = {m.paper_id: m for m in found if m.relevance >= cutoff}
            missing = [pid for pid in self._matches[topic] if pid not in self.facts]
            upvotes = db.upvotes_as_of(self.session, missing, self.now)
            for paper_id, (first_seen, published_on) in db.paper_dates(
                self.session, missing
            ).items():
                self.facts[paper_id] = _Facts(
                    first_seen, age_hours(published_on, first_seen, self.now), upvotes.get(paper_id)
                )
        return self._matches[topic]

    def matched_words(self, topic: str, paper_id: int) -> str:
        """The words of `topic` that `paper_id` matched, as the paper writes them (once per run)."""
        key = (topic, paper_id)
        if key not in self._words:
            paper = self.session.get(Paper, paper_id)
            assert paper is not None
            matched = self.matches(topic)[paper_id].matched
            self._words[key] = ", ".join(relevance.written_words(paper, matched))
        return self._words[key]

    def gains(self, window: timedelta) -> dict[int, int]:
        if window not in self._gains:
            start = self.now - window
            history = db.upvote_history(self.session, start, self.now)
            self._gains[window] = {
                paper_id: upvote_gain(observations, start, self.now)
                for paper_id, observations in history.items()
            }
        return self._gains[window]

    def ranked(self, topic: str, window: timedelta) -> _Ranked:
        """`topic`'s matches in the order its digest section shows them (once per run)."""
        key = (topic, window)
        if key not in self._ranked:
            matches, gains, facts = self.matches(topic), self.gains(window), self.facts
            gain = {pid: max(gains.get(pid, 0), 0) for pid in matches}
            signal = {pid: votes(facts[pid].upvotes, gain[pid]) for pid in matches}
            most = max(signal.values(), default=0)
            score = {pid: ranking_score(m.weight, signal[pid], most) for pid, m in matches.items()}
            order = sorted(matches, key=lambda p: (-score[p], -(facts[p].upvotes or 0), -p))
            gravity, enough = self.settings.gravity, self.settings.min_trending_gain
            rising = sorted(
                (
                    (trending_score(gains.get(pid, 0), facts[pid].age_hours, gravity), pid)
                    for pid, match in matches.items()
                    if gains.get(pid, 0) >= enough and match.relevance >= TRENDING_MIN_RELEVANCE
                ),
                reverse=True,
            )
            place = {pid: index for index, pid in enumerate(order)}
            self._ranked[key] = _Ranked(order, place, score, gain, rising)
        return self._ranked[key]

    def new_papers(
        self, topic: str, window: timedelta, new_since: datetime
    ) -> tuple[list[int], frozenset[int]]:
        """`topic`'s matches first seen after `new_since`: in rank order, and as a set."""
        key = (topic, window, new_since)
        found = self._new.lookup(key)
        if found is None:
            facts, now = self.facts, self.now
            order = self.ranked(topic, window).order
            papers = [p for p in order if new_since < facts[p].first_seen <= now]
            found = (papers, frozenset(papers))
            self._new.put(key, found)
        return found

    def _new_sets(
        self, topics: _Topics, window: timedelta, since: tuple[datetime, ...]
    ) -> list[frozenset[int]]:
        """Each topic's new papers, first seen after its own boundary in `since`."""
        return [
            self.new_papers(query, window, new_since)[1]
            for query, new_since in zip(topics.queries, since, strict=True)
        ]

    def _shares(self, topics: _Topics, window: timedelta, since: tuple[datetime, ...]) -> _Shares:
        """How many new papers go under each topic of this combination (received or not),
        and which go elsewhere; once per combination, with set operations."""
        key = (topics.queries, window, since)
        shares = self._assigned.lookup(key)
        if shares is None:
            new = self._new_sets(topics, window, since)
            elsewhere: list[set[int]] = [set() for _ in new]
            specific = [i for i, query in enumerate(topics.queries) if query != "*"]
            # Papers new in several real queries go under the best of them: these are few.
            contested: set[int] = set()
            for a, b in itertools.combinations(specific, 2):
                contested |= new[a] & new[b]
            for pid in contested:
                best = topics.best(pid, new)
                for i in specific:
                    if i != best and pid in new[i]:
                        elsewhere[i].add(pid)
            counts = [len(papers) - len(lost) for papers, lost in zip(new, elsewhere, strict=True)]
            # `*` keeps only what no real query matches (a second `*` keeps nothing).
            taken = set().union(*(new[i] for i in specific))
            for i, query in enumerate(topics.queries):
                if query == "*":
                    counts[i] = len(new[i] - taken)
                    taken |= new[i]
            shares = _Shares(counts, [frozenset(lost) for lost in elsewhere])
            self._assigned.put(key, shares)
        return shares

    def select(
        self, subscriber: Subscriber, digest_date: date, history: History | None = None
    ) -> Selection:
        """The digest `subscriber` should get on `digest_date` (their local date).

        `history` is what they got before (`histories`; read here when not given).
        """
        if history is None:
            history = histories(self.session, [(subscriber.id, digest_date)])[
                (subscriber.id, digest_date)
            ]
        start = self.window.new_since
        previous = history.previous_selected_at
        new_since = previous if previous is not None and start < previous <= self.now else start
        # A topic added after the topics of the previous digest was not in it: its first
        # digest looks back like a first digest.
        until = history.previous_topics_until
        since = tuple(
            start if until is not None and topic.added_at > until else new_since
            for topic in subscriber.topics
        )
        labels = tuple((topic.query, topic.label) for topic in subscriber.topics)
        topics = _Topics(
            tuple(query for query, _ in labels), [self.matches(query) for query, _ in labels]
        )
        # Received papers that no topic matches cannot change the digest.
        received = frozenset(
            pid for pid in history.received if any(pid in m for m in topics.matches)
        )
        window = trend_window(subscriber)
        key = (labels, window, since, received)
        chosen = self._chosen.get(
            key, lambda: self._choose(topics, labels, window, since, received)
        )
        items, more, body = chosen
        selection = Selection(
            digest_date=digest_date,
            new_since=new_since,
            items=list(items),
            more=dict(more),
            as_of=self.now,
            topics_until=max(
                (topic.added_at for topic in subscriber.topics if topic.added_at is not None),
                default=None,
            ),
        )
        selection._hash = content_hash(digest_date, body)
        return selection

    def _choose(
        self,
        topics: _Topics,
        labels: tuple[tuple[str, str | None], ...],
        window: timedelta,
        since: tuple[datetime, ...],
        received: frozenset[int],
    ) -> _Chosen:
        settings = self.settings
        ranked = [self.ranked(query, window) for query in topics.queries]

        # The papers shown as trending: of the clear matches, the best `max_trending` by
        # Hacker News score, each under the topic it matches best.
        trending: dict[int, int] = {}
        limit = min(settings.max_trending, settings.max_items)
        if limit > 0:
            for _, pid in heapq.merge(*(r.rising for r in ranked), reverse=True):
                if pid in trending or pid in received:
                    continue
                trending[pid] = topics.best(pid)
                if len(trending) >= limit:
                    break

        # Each topic's queue: its trending papers first, then its new ones, in rank order.
        # Only the head a topic can show is built; the rest is counted. A new paper counts
        # under the best of the topics it is new in (`home`), a trending one where it shows.
        new = self._new_sets(topics, window, since)
        shares = self._shares(topics, window, since)
        counts = list(shares.counts)
        for pid in received:
            home = topics.best(pid, new)
            if home >= 0:
                counts[home] -= 1
        for pid, position in trending.items():
            home = topics.best(pid, new)
            if home != position:
                counts[position] += 1
                if home >= 0:
                    counts[home] -= 1
        real = [new[i] for i, query in enumerate(topics.queries) if query != "*"]
        heads: list[list[int]] = []
        for position, query in enumerate(topics.queries):
            place = ranked[position].place
            mine = [pid for pid, at in trending.items() if at == position]
            mine.sort(key=place.__getitem__)
            cap = settings.max_items if query == "*" else settings.max_per_topic
            head = mine[: min(cap, settings.max_items)]
            want = min(cap, settings.max_items, counts[position])
            if len(head) < want:
                lost = shares.elsewhere[position]
                star = query == "*"
                for pid in self.new_papers(query, window, since[position])[0]:
                    if pid in received or pid in trending or pid in lost:
                        continue
                    if star and any(pid in m for m in real):
                        continue
                    head.append(pid)
                    if len(head) >= want:
                        break
            heads.append(head)

        # Round-robin over the topics so one busy topic cannot crowd out the others.
        taken: list[list[int]] = [[] for _ in heads]
        total = 0
        while total < settings.max_items and any(heads):
            for position, head in enumerate(heads):
                if head and total < settings.max_items:
                    taken[position].append(head.pop(0))
                    total += 1

        items: list[SelectedItem] = []
        for position, ((query, label), papers) in enumerate(zip(labels, taken, strict=True)):
            rank = ranked[position]
            for pid in sorted(papers, key=rank.place.__getitem__):
                items.append(self._item(query, label, pid, pid in trending, rank))
        more: dict[str, int] = {}
        for query, count, papers in zip(topics.queries, counts, taken, strict=True):
            if count > len(papers):
                more[query] = count - len(papers)
        return tuple(items), tuple(more.items()), content_body(items, more)

    def _item(
        self, query: str, label: str | None, pid: int, trending: bool, rank: _Ranked
    ) -> SelectedItem:
        return SelectedItem(
            paper_id=pid,
            kind="trending" if trending else "new",
            topic=query,
            topic_label=label,
            relevance=self.matches(query)[pid].relevance,
            score=rank.score[pid],
            upvotes=self.facts[pid].upvotes,
            upvote_gain=rank.gain[pid],
            matched=self.matched_words(query, pid),
        )

    def topic_listing(
        self, query: str, label: str | None = None, window: timedelta = DAY
    ) -> TopicListing:
        """Every paper a first digest on `query` alone counts, shown or in its "N more
        matched": matches above the cutoff, new in the lookback window or among the
        `max_trending` trending ones, in the digest's order."""
        rank = self.ranked(query, window)
        limit = min(self.settings.max_trending, self.settings.max_items)
        trending = {pid for _, pid in rank.rising[: max(limit, 0)]}
        new = self.new_papers(query, window, self.window.new_since)[1]
        items = ListedItems(
            [pid for pid in rank.order if pid in new or pid in trending],
            lambda pid: self._item(query, label, pid, pid in trending, rank),
        )
        return TopicListing(query, items, query in self.capped, self.settings.lookback_days)


class ListedItems(Sequence[SelectedItem]):
    """A topic listing's items, each made (its matched words read from the paper) only when
    it is looked at: `/api/match` counts hundreds and shows three, a topic page shows one
    page, and reading every paper's words made each lookup cost seconds."""

    def __init__(self, paper_ids: list[int], make: Callable[[int], SelectedItem]) -> None:
        self._ids = paper_ids
        self._make = make

    @property
    def paper_ids(self) -> list[int]:
        """The papers in order, without making their items."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> SelectedItem: ...

    @overload
    def __getitem__(self, index: slice) -> list[SelectedItem]: ...

    def __getitem__(self, index: int | slice) -> SelectedItem | list[SelectedItem]:
        if isinstance(index, slice):
            return [self._make(pid) for pid in self._ids[index]]
        return self._make(self._ids[index])


@dataclass(frozen=True)
class TopicListing:
    """Every match of one topic that its digest counts (`SelectionRun.topic_listing`):
    what the web's topic page lists and `/api/match` counts."""

    query: str
    items: ListedItems
    capped: bool  # the index had more candidates than were scored: `count` is a lower bound
    days: int  # the lookback window

    @property
    def count(self) -> str:
        """How many, as a reader should read it: "400+" when the candidates were capped."""
        return f"{len(self.items)}+" if self.capped else str(len(self.items))


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

    The digest planned for that date if there is one (sent, or to be sent); nothing
    if that date's row found nothing to send (`empty`); else a fresh selection, as of
    the date's send time if that has passed, else as of now. Writes nothing. Returns
    the date, the effective `now` and the content. `digest preview` and the web's
    preview pages run exactly this (for a subscriber's next digest, see
    `digest.schedule.next_digest`).
    """
    day = digest_date or local_date(now, subscriber.timezone)
    if digest_date is not None:
        now = selection_time(subscriber, day, now)
    delivery = db.find_delivery(session, subscriber.id, day) if subscriber.id else None
    if delivery is not None and delivery.digest is not None:
        stored = delivery.digest
        more = json.loads(stored.more_matched or "{}")
        return day, now, DigestContent(stored.items, stored.content_hash, more, stored.id)
    if delivery is not None and delivery.status == DeliveryStatus.EMPTY:
        return day, now, DigestContent([], content_hash(day, content_body([], {})))
    selection = SelectionRun(session, now, settings).select(subscriber, day)
    return day, now, DigestContent(selection.items, selection.content_hash, selection.more)
