"""Ranking formulas: the upvote signal of a paper and how it orders a topic's matches.

Pure functions used by `digest.select` (and its reference test): no database, no clock.

**Trending**: a paper's ``gain`` is its latest upvote count at `now` minus the latest
before the subscriber's period (or the first one in it: a first observation is no
gain, `upvote_gain`). Trending papers are ranked by the Hacker News score

    trending_score = gain / (age_hours + 2) ** gravity

(`age_hours` since its publication date, else since it was first seen;
`digest.gravity`, 1.8 by default).

Each topic's papers are ordered by

    score = weight * (1 + 0.2 * log(1 + votes) / log(1 + most))

(`weight`: the match's relevance, times 1.5 when its title names the query,
`digest.relevance.Match.weight`; `votes` = upvotes as of `now` + the period's gain; `most`:
the highest `votes` among the topic's matches; no boost when none has any). The
community's signal raises the papers people upvote, the topic's most upvoted paper
by a fifth, but it is bounded and relative to the topic, so it reorders papers of
about equal relevance and never lifts a weak match over one more than a fifth more
relevant, whatever the absolute counts: the publication date plays no part.
(`bench/relevance.py --upvotes SEED` measures what the signal costs on the judged
set: with synthetic upvotes independent of the topics, this order and the trending
floor cost at most 0.007 nDCG@10, where the earlier unbounded
``1 + 0.1 * log2(1 + votes)`` without a floor cost up to 0.022.)
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time

POPULARITY_WEIGHT = 0.2  # the most upvoted match of a topic weighs this much more


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


def age_hours(published_on: date | None, first_seen_at: datetime, now: datetime) -> float:
    """A paper's age: since its publication date, else since it was first seen."""
    born = datetime.combine(published_on, time(), tzinfo=UTC) if published_on else first_seen_at
    return max(0.0, (now - born).total_seconds() / 3600)


def trending_score(gain: int, age_hours: float, gravity: float) -> float:
    """Hacker News gravity: the upvote gain, decayed by the paper's age."""
    return float(gain / (age_hours + 2.0) ** gravity)


def votes(upvotes: int | None, gain: int) -> int:
    """The upvote signal of a paper: its count and its recent gain."""
    return max(0, upvotes or 0) + max(0, gain)


def ranking_score(weight: float, votes: int, most: int) -> float:
    """The match's weight raised by its share of the upvote signal, on a log scale, relative
    to `most`, the highest among the topic's matches: at most by POPULARITY_WEIGHT."""
    if most <= 0:
        return weight
    return float(weight * (1 + POPULARITY_WEIGHT * math.log1p(votes) / math.log1p(most)))
