"""bench/relevance.py's synthetic upvotes: they are what the selection sees as each paper's
count and gain, and the same seed gives the same votes."""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bench.relevance import (
    JUDGED,
    PlainBM25,
    add_upvotes,
    best_order_ndcg,
    preview_keys,
    read_judged,
    score,
)
from digest import db
from digest.config import DigestSettings
from digest.days import DAY
from digest.ingest import ingest_inputs
from digest.models import Paper, UpvoteObservation
from digest.select import SelectionRun
from tests.conftest import NOW, SEEDS


def votes_seen(factory: sessionmaker[Session]) -> tuple[dict[int, int], dict[int, int]]:
    """Each paper's count as of NOW and its gain over the last day, as the selection sees them."""
    with factory() as session:
        ids = list(session.scalars(select(Paper.id)))
        run = SelectionRun(session, NOW, DigestSettings())
        return db.upvotes_as_of(session, ids, NOW), run.gains(DAY)


def test_synthetic_upvotes_are_the_counts_and_gains_the_selection_sees(factory) -> None:
    ingest_inputs(factory, [str(SEEDS)], now=NOW, max_bytes=10**8)
    with factory() as session:
        papers = session.scalar(select(func.count()).select_from(Paper))
        seed_observations = session.scalar(select(func.count()).select_from(UpvoteObservation))
    assert papers == 540 and seed_observations == 140
    assert add_upvotes(factory, NOW, 7) == 2 * 540
    counts, gains = votes_seen(factory)
    with factory() as session:
        ids = list(session.scalars(select(Paper.id)))
        earlier = db.upvotes_as_of(session, ids, NOW - timedelta(hours=36))
    # Every paper has a synthetic count (the seeds' own observations are overridden),
    # and its gain over the day is exactly what was added since the earlier count.
    assert set(counts) == set(earlier) == set(ids)
    assert {pid: gains.get(pid, 0) for pid in ids} == {
        pid: counts[pid] - earlier[pid] for pid in ids
    }
    gaining = sum(1 for pid in ids if counts[pid] > earlier[pid])
    assert 0 < gaining < len(ids)
    assert max(counts.values()) > 100  # a long tail, as on Hugging Face


def test_the_same_seed_gives_the_same_votes(tmp_path) -> None:
    seen = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        engine = db.open_database(f"sqlite:///{tmp_path / name}.sqlite3")
        factory = db.session_factory(engine)
        ingest_inputs(factory, [str(SEEDS)], now=NOW, max_bytes=10**8)
        add_upvotes(factory, NOW, seed)
        seen.append(votes_seen(factory))
        engine.dispose()
    assert seen[0] == seen[1]
    assert seen[0][0] != seen[2][0]


def test_score_of_a_shown_list() -> None:
    grades = {"a": 2, "b": 1, "c": 0, "d": 2}
    shown = score(["a", "c", "b"], grades)
    assert shown.shown == 3
    assert shown.precision == 2 / 3
    assert shown.recall == 1 / 2
    ideal = 2 + 2 / 1.584962500721156 + 1 / 2
    assert abs(shown.ndcg - (2 + 0 + 1 / 2) / ideal) < 1e-12
    assert score([], grades).precision == 0.0


def test_best_order_ndcg_sorts_what_it_is_given_by_grade() -> None:
    grades = {"a": 2, "b": 1, "c": 0, "d": 2}
    ideal = 2 + 2 / math.log2(3) + 1 / 2
    # c, b, a in the best order a ranking could give them: a (2), b (1), c (0)
    assert abs(best_order_ndcg(["c", "b", "a"], grades) - (2 + 1 / math.log2(3)) / ideal) < 1e-12
    assert best_order_ndcg(["d", "a", "b", "c", "x"], grades) == 1.0
    assert best_order_ndcg([], grades) == 0.0
    assert best_order_ndcg(["a"], {"a": 0}) == 0.0


def test_preview_keys_follow_the_selection(factory) -> None:
    ingest_inputs(factory, [str(SEEDS)], now=NOW, max_bytes=10**8)
    keys = preview_keys(factory, "speech", NOW, DigestSettings())
    assert len(keys) == 10
    assert keys[0] == "title:deep speech scaling up end to end speech recognition"


def test_every_judged_topic_grades_each_seed_paper_once(factory) -> None:
    """The judged sets (tests/data/relevance and its subfolders) grade exactly the seed
    papers, each once, 0, 1 or 2, and no two topics share a file name."""
    ingest_inputs(factory, [str(SEEDS)], now=NOW, max_bytes=10**8)
    with factory() as session:
        keys = set(session.scalars(select(Paper.key)))
    assert len(keys) == 540
    paths = sorted(JUDGED.rglob("*.tsv"))
    assert len(paths) == 78
    assert len({path.stem for path in paths}) == len(paths)
    for path in paths:
        judged = read_judged(path)
        graded = [line for line in path.read_text().splitlines() if not line.startswith("#")]
        assert judged.query, path
        assert len(graded) == 540 and set(judged.grades) == keys, path
        assert set(judged.grades.values()) <= {0, 1, 2}, path
        assert any(grade == 2 for grade in judged.grades.values()), path


def test_plain_bm25_reference_ranks_by_stemmed_words() -> None:
    bm25 = PlainBM25(
        {
            "a": "Diffusion models. Diffusion models generate images.",
            "b": "A diffusion model for audio.",
            "c": "Language models of the web.",
            "d": "Sorting networks.",
        }
    )
    # Snowball stems "models" and "model" alike; stop words in the query count nothing.
    assert bm25.terms("Diffusion Models") == ["diffus", "model"]
    assert bm25.top("the diffusion models") == ["a", "b", "c"]
    assert bm25.top("diffusion", size=1) == ["a"]
    assert bm25.top("of the") == []
    # BM25 itself: idf ln(1 + (N - df + 0.5) / (df + 0.5)), k1 1.2, b 0.75; a paper's
    # length counts its stop words (c: languag model of the web, 5; average 18 / 4).
    idf = math.log(1 + (4 - 1 + 0.5) / (1 + 0.5))
    expected = idf * 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 5 / 4.5))
    assert abs(bm25.scores("web")["c"] - expected) < 1e-12
    assert set(bm25.scores("web")) == {"c"}
