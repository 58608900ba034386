"""Relevance of what a topic preview shows, measured on the judged set.

Loads the bundled seeds into a temporary SQLite file as of a fixed time, then
for every judged topic in tests/data/relevance/*.tsv (line 1 `# topic: QUERY`,
then `grade<TAB>key<TAB>title` for all 540 seed papers; grade 2 about the
topic, 1 partly, 0 not) asks the real selection path what `digest preview
--topic QUERY` would show (`select.digest_content` for an ad hoc subscriber,
with its caps and cutoff) and prints:

* precision: the share of shown papers graded at least 1 (0 when nothing is shown);
* nDCG@10 of the shown list, gains = grades, the ideal from all of the topic's grades;
* recall of the grade-2 papers among those shown;

per topic and on average. `--split` reports a tuning half and a held-out half
(alternate topics in name order), so a change tuned on one half can be checked
on the other.

Run: .venv/bin/python bench/relevance.py [--as-of 2026-11-25T08:00] [--split] [DIR]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digest import db
from digest.config import DigestSettings
from digest.ingest import ingest_inputs
from digest.models import Paper
from digest.resources import resource_dir
from digest.select import digest_content
from digest.subscribers import transient_subscriber

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


def table(title: str, rows: list[tuple[str, Scores]]) -> None:
    print(f"\n{title}")
    print(f"{'topic':<28} {'shown':>5} {'prec':>6} {'nDCG10':>6} {'R(2)':>6}")
    for name, s in rows:
        print(f"{name:<28} {s.shown:>5} {s.precision:6.2f} {s.ndcg:6.2f} {s.recall:6.2f}")
    if rows:
        mean = [
            statistics.fmean(getattr(s, f) for _, s in rows) for f in Scores.__dataclass_fields__
        ]
        print(f"{'mean':<28} {mean[0]:5.1f} {mean[1]:6.2f} {mean[2]:6.2f} {mean[3]:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=JUDGED)
    parser.add_argument("--as-of", default="2026-11-25T08:00", help="ingest and preview time (UTC)")
    parser.add_argument("--split", action="store_true", help="also report tuning/held-out halves")
    parser.add_argument(
        "--min-relevance", type=float, help="digest.min_relevance to measure (default: built-in)"
    )
    args = parser.parse_args()
    now = datetime.fromisoformat(args.as_of).replace(tzinfo=UTC)
    judged = [read_judged(path) for path in sorted(args.folder.glob("*.tsv"))]
    settings = DigestSettings()
    if args.min_relevance is not None:
        settings = replace(settings, min_relevance=args.min_relevance)
    with tempfile.TemporaryDirectory() as folder:
        engine = db.open_database(f"sqlite:///{Path(folder) / 'relevance.sqlite3'}")
        factory = db.session_factory(engine)
        ingest_inputs(factory, [str(resource_dir("seeds"))], now=now, max_bytes=10**8)
        with factory() as session:
            known = set(session.scalars(select(Paper.key)))
        rows = []
        for topic in judged:
            missing = set(topic.grades) - known
            if missing:
                raise SystemExit(f"{topic.name}: {len(missing)} graded keys not in the seeds")
            rows.append(
                (topic.name, score(preview_keys(factory, topic.query, now, settings), topic.grades))
            )
        engine.dispose()
    table(f"all {len(rows)} judged topics, as of {now:%Y-%m-%d %H:%M} UTC", rows)
    if args.split:
        table("tuning half (1st, 3rd, ... topic)", rows[0::2])
        table("held-out half (2nd, 4th, ... topic)", rows[1::2])


if __name__ == "__main__":
    main()
