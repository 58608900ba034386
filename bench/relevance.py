"""Relevance of what a topic preview shows, measured on a judged set.

Loads the bundled seeds into a temporary SQLite file as of a fixed time, then
for every judged topic in a folder of `*.tsv` files (by default
tests/data/relevance/; line 1 `# topic: QUERY`, then `grade<TAB>key<TAB>title`
for all 540 seed papers; grade 2 about the topic, 1 partly, 0 not) asks the
real selection path what `digest preview --topic QUERY` would show
(`select.digest_content` for an ad hoc subscriber, with its caps and cutoff)
and prints:

* precision: the share of shown papers graded at least 1 (0 when nothing is shown);
* nDCG@10 of the shown list, gains = grades, the ideal from all of the topic's grades;
* recall of the grade-2 papers among those shown;

per topic and on average. `--split` reports a tuning half and a held-out half
(alternate topics in name order).

`--judged` may be repeated to pool folders (tests/data/relevance and its
validation/, holdout/ ... holdout7/ sets). `--cv` measures how well tuning generalises. Each `--vary
NAME=V1,V2,...` names a `digest.relevance` constant (FEEDBACK_PAPERS, NEAR_WEIGHT,
...), a `digest.ranking` or `digest.select` one (POPULARITY_WEIGHT, TRENDING_MIN_RELEVANCE)
or a `digest.*` setting (min_relevance, max_per_topic) and the values to try; every
combination is run through the same real path, and for each topic the
combination that is best on the *other* topics (mean precision + mean nDCG@10)
is scored on it (leave one topic out), as is each half with the combination
best on the other half. Those held-out means are what to expect on new topics;
the in-sample best is printed for comparison.

`--bm25` also prints, topic by topic, the reference the issue measures against: a
plain BM25 (k1 1.2, b 0.75) over each paper's title and abstract as one field,
Snowball-stemmed words without stop words, its 10 best papers shown (`PlainBM25`).
`--uncapped` also scores every match above the cutoff (`max_per_topic` and `max_items`
lifted): a digest shows the matches first seen since the last one, a few a day, so over
the days a subscriber receives all of them, and their precision and grade-2 recall are
what the topic delivers (nDCG@10 is that of the same first ten).
`--ceiling` prints how far reordering can go: per topic, the nDCG@10 of the shown
papers sorted by their grades, of every paper the method matches (cutoff and caps
lifted) sorted so, and of every paper holding any of the query's words (the plain
BM25 candidates) sorted so. No ranking of those candidates, however good, can do
better; what is above the last figure needs papers that never use the topic's words.

The seed papers carry almost no upvotes, so the order's upvote signal changes
nothing here. `--upvotes SEED` gives every paper synthetic upvotes drawn
independently of the topics (`add_upvotes`): a count, and for a third of the
papers a gain in the last day, so some trend. Whatever the scores lose then is
what the community signal costs the relevance of what is shown.

Run: .venv/bin/python bench/relevance.py [--judged DIR ...] [--as-of 2026-11-25T08:00] [--split]
         [--bm25] [--uncapped]
     .venv/bin/python bench/relevance.py --cv --vary min_relevance=0.25,0.3
         --vary FEEDBACK_PAPERS=10,20
     .venv/bin/python bench/relevance.py --upvotes 1 --cv --vary POPULARITY_WEIGHT=0,0.2
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digest import db, query_plan, ranking, relevance
from digest import select as selection
from digest.config import DigestSettings
from digest.ingest import ingest_inputs
from digest.models import Paper, UpvoteObservation
from digest.resources import resource_dir
from digest.select import digest_content
from digest.subscribers import transient_subscriber
from digest.text import STOP_WORDS, fold, stem, words

JUDGED = Path(__file__).resolve().parent.parent / "tests" / "data" / "relevance"


@dataclass(frozen=True)
class Judged:
    name: str
    query: str
    grades: dict[str, int]


@dataclass(frozen=True)
class Scores:
    shown: int
    precision: float
    ndcg: float
    recall: float


def read_judged(path: Path) -> Judged:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("# topic:"):
        raise SystemExit(f"{path}: line 1 must be '# topic: QUERY'")
    grades: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        grade, key, *_ = line.split("\t")
        if grade not in ("0", "1", "2"):
            raise SystemExit(f"{path}:{number}: grade must be 0, 1 or 2, got {grade!r}")
        grades[key] = int(grade)
    return Judged(path.stem, lines[0].removeprefix("# topic:").strip(), grades)


def dcg(gains: list[int]) -> float:
    return sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains[:10]))


def score(shown: list[str], grades: dict[str, int]) -> Scores:
    gains = [grades.get(key, 0) for key in shown]
    ideal = dcg(sorted(grades.values(), reverse=True))
    highly = {key for key, grade in grades.items() if grade == 2}
    return Scores(
        shown=len(shown),
        precision=sum(1 for g in gains if g >= 1) / len(shown) if shown else 0.0,
        ndcg=dcg(gains) / ideal if ideal else 0.0,
        recall=len(highly & set(shown)) / len(highly) if highly else 1.0,
    )


def best_order_ndcg(keys: Iterable[str], grades: dict[str, int]) -> float:
    """nDCG@10 of `keys` in the best order a ranking of them could have (by grade)."""
    ideal = dcg(sorted(grades.values(), reverse=True))
    found = sorted((grades.get(key, 0) for key in keys), reverse=True)
    return dcg(found) / ideal if ideal else 0.0


def add_upvotes(factory: sessionmaker[Session], now: datetime, seed: int) -> int:
    """Give every paper synthetic upvotes, drawn independently of any topic: a count a
    day and a half before `now`, and at `now` that count plus, for a third of the
    papers, a gain (so they trend). Returns the observations added.

    Counts are log-normal (median 8, a long tail into the hundreds, like Hugging Face
    daily papers), gains too (median 6). The observations at `now` come after the
    seeds' own, so they are the papers' counts. As the votes know nothing of the
    topics, whatever the scores lose is what the upvote signal costs.
    """
    rng = random.Random(seed)
    with factory() as session:
        rows: list[UpvoteObservation] = []
        for paper_id in session.scalars(select(Paper.id).order_by(Paper.id)):
            count = int(rng.lognormvariate(math.log(8), 1.3))
            gain = 1 + int(rng.lognormvariate(math.log(5), 1.2)) if rng.random() < 1 / 3 else 0
            for hours, upvotes in ((36, count), (0, count + gain)):
                at = now - timedelta(hours=hours)
                rows.append(UpvoteObservation(paper_id=paper_id, observed_at=at, upvotes=upvotes))
        session.add_all(rows)
        session.commit()
        return len(rows)


def preview_keys(
    factory: sessionmaker[Session], query: str, now: datetime, settings: DigestSettings
) -> list[str]:
    """The keys of the papers `digest preview --topic QUERY` shows, in order."""
    with factory() as session:
        subscriber = transient_subscriber([query], settings.default_timezone, settings.default_hour)
        _, _, content = digest_content(session, subscriber, None, now, settings)
        ids = [item.paper_id for item in content.items]
        papers = db.papers_by_id(session, ids)
        session.rollback()
        return [papers[paper_id].key for paper_id in ids]


class PlainBM25:
    """The reference ranking: BM25 over title and abstract as one field, each word folded
    and Snowball-stemmed, stop words left out (of the query; in a paper they only
    count towards its length)."""

    K1 = 1.2
    B = 0.75

    def __init__(self, papers: dict[str, str]) -> None:
        self.tf = {key: Counter(self.terms(text)) for key, text in papers.items()}
        self.length = {key: sum(tf.values()) for key, tf in self.tf.items()}
        self.average = statistics.fmean(self.length.values()) if papers else 0.0
        self.df = Counter(term for tf in self.tf.values() for term in tf)

    @staticmethod
    def terms(text: str) -> list[str]:
        return [stem(fold(word)) for word in words(text)]

    def scores(self, query: str) -> dict[str, float]:
        n = len(self.tf)
        wanted = {t for t in self.terms(query) if t not in STOP_WORDS}
        found: dict[str, float] = {}
        for key, tf in self.tf.items():
            norm = self.K1 * (1 - self.B + self.B * self.length[key] / self.average)
            score = sum(
                math.log(1 + (n - self.df[t] + 0.5) / (self.df[t] + 0.5))
                * tf[t]
                * (self.K1 + 1)
                / (tf[t] + norm)
                for t in wanted
                if tf[t]
            )
            if score > 0:
                found[key] = score
        return found

    def top(self, query: str, size: int = 10) -> list[str]:
        """The `size` best papers' keys, the best first (ties by key)."""
        scores = self.scores(query)
        return sorted(scores, key=lambda key: (-scores[key], key))[:size]


def table(title: str, rows: list[tuple[str, Scores]]) -> None:
    print(f"\n{title}")
    print(f"{'topic':<28} {'shown':>5} {'prec':>6} {'nDCG10':>6} {'R(2)':>6}")
    for name, s in rows:
        print(f"{name:<28} {s.shown:>5} {s.precision:6.2f} {s.ndcg:6.2f} {s.recall:6.2f}")
    if rows:
        mean = [
            statistics.fmean(getattr(s, f) for _, s in rows) for f in Scores.__dataclass_fields__
        ]
        print(f"{'mean':<28} {mean[0]:5.1f} {mean[1]:6.3f} {mean[2]:6.3f} {mean[3]:6.3f}")


def ceiling_table(rows: list[tuple[str, tuple[float, ...]]]) -> None:
    print("\nnDCG@10 as shown, and of the best order of: what is shown, every match, every")
    print("paper with any query word")
    print(f"{'topic':<28} {'shown':>6} {'best':>6} {'match':>6} {'word':>6}")
    means = tuple(statistics.fmean(column) for column in zip(*(f for _, f in rows), strict=True))
    for name, figures in [*rows, ("mean", means)]:
        print(f"{name:<28} " + " ".join(f"{figure:6.3f}" for figure in figures))


Combination = tuple[tuple[str, object], ...]


def _module(name: str) -> ModuleType | None:
    """The module whose constant `name` is: digest.relevance, digest.query_plan,
    digest.ranking or digest.select."""
    return next((m for m in (relevance, query_plan, ranking, selection) if hasattr(m, name)), None)


def parse_vary(texts: list[str]) -> list[Combination]:
    """Every combination of the `--vary NAME=V1,V2` values, typed like the defaults."""
    axes: list[list[tuple[str, object]]] = []
    for text in texts:
        name, _, values = text.partition("=")
        if name in DigestSettings.__dataclass_fields__:
            default = getattr(DigestSettings(), name)
        elif name.isupper() and _module(name) is not None:
            default = getattr(_module(name), name)
        else:
            raise SystemExit(
                f"--vary {text!r}: not a constant of digest.relevance, digest.query_plan, "
                "digest.ranking or digest.select, nor a setting"
            )
        kind = type(default)
        if kind is bool:
            axes.append(
                [(name, value.strip().lower() in ("1", "true")) for value in values.split(",")]
            )
        else:
            axes.append([(name, kind(value)) for value in values.split(",")])
    return [tuple(combination) for combination in itertools.product(*axes)]


def run_topics(
    factory: sessionmaker[Session],
    judged: list[Judged],
    now: datetime,
    settings: DigestSettings,
    combination: Combination = (),
) -> list[tuple[str, Scores]]:
    """Every topic through the real preview path, with `combination` in force."""
    constants = [(name, _module(name)) for name, _ in combination]
    saved = {name: (module, getattr(module, name)) for name, module in constants if module}
    for name, value in combination:
        if name in DigestSettings.__dataclass_fields__:
            settings = replace(settings, **{name: value})
        else:
            setattr(saved[name][0], name, value)
    try:
        return [
            (topic.name, score(preview_keys(factory, topic.query, now, settings), topic.grades))
            for topic in judged
        ]
    finally:
        for name, (module, value) in saved.items():
            setattr(module, name, value)


def objective(rows: dict[str, Scores], names: list[str]) -> float:
    return statistics.fmean(rows[n].precision for n in names) + statistics.fmean(
        rows[n].ndcg for n in names
    )


def cross_validate(results: dict[Combination, dict[str, Scores]], names: list[str]) -> None:
    """Held-out scores of choosing the best combination on the other topics."""

    def best(on: list[str]) -> Combination:
        return max(results, key=lambda combination: objective(results[combination], on))

    def shown(combination: Combination) -> str:
        return ", ".join(f"{name}={value}" for name, value in combination) or "defaults"

    print("\nevery combination on all topics (mean precision, mean nDCG@10):")
    for combination, rows in results.items():
        precision = statistics.fmean(rows[n].precision for n in names)
        ndcg = statistics.fmean(rows[n].ndcg for n in names)
        print(f"  {precision:.3f} {ndcg:.3f}  {shown(combination)}")
    chosen = best(names)
    table(
        f"in sample: best on all {len(names)} topics ({shown(chosen)})",
        [(n, results[chosen][n]) for n in names],
    )
    held: list[tuple[str, Scores]] = []
    picks: dict[Combination, int] = {}
    for name in names:
        pick = best([n for n in names if n != name])
        picks[pick] = picks.get(pick, 0) + 1
        held.append((name, results[pick][name]))
    table("leave one topic out: each topic with the best combination on the others", held)
    for combination, count in sorted(picks.items(), key=lambda item: -item[1]):
        print(f"  chosen {count}x: {shown(combination)}")
    first, second = names[0::2], names[1::2]
    pick_first, pick_second = best(first), best(second)
    halves = [(n, results[pick_second][n]) for n in first]
    halves += [(n, results[pick_first][n]) for n in second]
    table(
        "two halves both ways: each half with the best combination on the other half",
        sorted(halves),
    )
    print(f"  best on 1st half: {shown(pick_first)}\n  best on 2nd half: {shown(pick_second)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--judged",
        type=Path,
        action="append",
        help="folder of judged *.tsv (repeat to pool folders; default: tests/data/relevance)",
    )
    parser.add_argument("--as-of", default="2026-11-25T08:00", help="ingest and preview time (UTC)")
    parser.add_argument("--split", action="store_true", help="also report tuning/held-out halves")
    parser.add_argument(
        "--min-relevance", type=float, help="digest.min_relevance to measure (default: built-in)"
    )
    parser.add_argument(
        "--upvotes",
        type=int,
        metavar="SEED",
        help="add synthetic upvotes (independent of the topics, from this random seed) to "
        "measure what the upvote signal in the order costs",
    )
    parser.add_argument(
        "--bm25", action="store_true", help="also score the plain BM25 reference (`PlainBM25`)"
    )
    parser.add_argument(
        "--uncapped",
        action="store_true",
        help="also score every match above the cutoff (max_per_topic lifted): what a "
        "subscriber receives over the days, as each day brings a few of them",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also print the nDCG@10 of the best order of what is shown, of every match "
        "and of every paper with any query word: what no reordering can exceed",
    )
    parser.add_argument("--cv", action="store_true", help="cross-validate the --vary grid")
    parser.add_argument("--vary", action="append", default=[], metavar="NAME=V1,V2,...")
    args = parser.parse_args()
    now = datetime.fromisoformat(args.as_of).replace(tzinfo=UTC)
    folders = args.judged or [JUDGED]
    judged = [read_judged(path) for folder in folders for path in sorted(folder.glob("*.tsv"))]
    if not judged:
        raise SystemExit(f"{', '.join(map(str, folders))}: no judged *.tsv files")
    names = [topic.name for topic in judged]
    if len(set(names)) != len(names):
        raise SystemExit("two judged topics have the same file name")
    settings = DigestSettings()
    if args.min_relevance is not None:
        settings = replace(settings, min_relevance=args.min_relevance)
    combinations = parse_vary(args.vary)
    with tempfile.TemporaryDirectory() as folder:
        engine = db.open_database(f"sqlite:///{Path(folder) / 'relevance.sqlite3'}")
        factory = db.session_factory(engine)
        ingest_inputs(factory, [str(resource_dir("seeds"))], now=now, max_bytes=10**8)
        if args.upvotes is not None:
            add_upvotes(factory, now, args.upvotes)
        with factory() as session:
            known = set(session.scalars(select(Paper.key)))
        for topic in judged:
            missing = set(topic.grades) - known
            if missing:
                raise SystemExit(f"{topic.name}: {len(missing)} graded keys not in the seeds")
        rows = run_topics(factory, judged, now, settings)
        uncapped = (
            run_topics(
                factory,
                judged,
                now,
                replace(settings, max_per_topic=len(known), max_items=len(known)),
            )
            if args.uncapped
            else []
        )
        reference: list[tuple[str, Scores]] = []
        bm25: PlainBM25 | None = None
        if args.bm25 or args.ceiling:
            with factory() as session:
                texts = {
                    key: f"{title} {abstract}"
                    for key, title, abstract in session.execute(
                        select(Paper.key, Paper.title, Paper.abstract)
                    )
                }
            bm25 = PlainBM25(texts)
        if args.bm25 and bm25:
            reference = [(t.name, score(bm25.top(t.query), t.grades)) for t in judged]
        ceilings: list[tuple[str, tuple[float, ...]]] = []
        if args.ceiling and bm25:
            lifted = replace(
                settings, min_relevance=0.0, max_per_topic=len(known), max_items=len(known)
            )
            for topic, (_, shown) in zip(judged, rows, strict=True):
                keys = preview_keys(factory, topic.query, now, settings)
                matches = preview_keys(factory, topic.query, now, lifted)
                ceilings.append(
                    (
                        topic.name,
                        (
                            shown.ndcg,
                            best_order_ndcg(keys, topic.grades),
                            best_order_ndcg(matches, topic.grades),
                            best_order_ndcg(bm25.scores(topic.query), topic.grades),
                        ),
                    )
                )
        results = {}
        if args.cv:
            for combination in combinations:
                results[combination] = dict(run_topics(factory, judged, now, settings, combination))
        engine.dispose()
    where = ", ".join(map(str, folders))
    table(f"all {len(rows)} judged topics in {where}, as of {now:%Y-%m-%d %H:%M} UTC", rows)
    if uncapped:
        table("every match above the cutoff (precision and R(2) over all of them)", uncapped)
    if ceilings:
        ceiling_table(ceilings)
    if reference:
        table("plain BM25 (Snowball, title and abstract, its 10 best), the same topics", reference)
    if args.split:
        table("tuning half (1st, 3rd, ... topic)", rows[0::2])
        table("held-out half (2nd, 4th, ... topic)", rows[1::2])
    if args.cv:
        cross_validate(results, [topic.name for topic in judged])


if __name__ == "__main__":
    main()
