"""A synthetic workload for the scale benchmarks, grown from the seed vocabulary.

Papers are stitched from the bundled seed papers: a title from the words of two
seed titles, an abstract from sentences of three seed abstracts, so terms keep
their real frequencies and topics match realistic shares of the corpus. They
are written as Hugging Face `daily_papers` JSON files (the API's own shape),
split so each file stays under the ingest size cap. Topics are 30 realistic
queries, extended (up to thousands) with distinctive word pairs of seed titles.
Subscribers (1 to 3 topics each, several timezones and hours) are written as the
CSV that `digest subscribers import` reads. Everything is a pure function of
its seed, so two runs measure the same work.

    from bench.synthetic import write_papers, topic_pool, write_subscribers
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"

# What researchers subscribe to (one word, several words, acronyms, operators).
REALISTIC_TOPICS = [
    "diffusion model",
    "language model",
    "reinforcement learning",
    "speech",
    "video generation",
    "robot",
    "code generation",
    "RAG",
    "LLM agents",
    "MoE",
    "3D",
    "RLHF OR DPO",
    "quantization",
    "vision language model",
    "mathematical reasoning",
    "segmentation",
    "knowledge distillation",
    "multilingual",
    "hallucination",
    "instruction tuning",
    "text-to-image",
    "long context",
    "ViT",
    "question answering",
    "graph neural network",
    "benchmark -survey",
    '"in-context learning"',
    "title:transformer",
    "efficient attention",
    "*",
]
TIMEZONES = [
    "UTC",
    "Europe/London",
    "Europe/Paris",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
]
FIRST_NAMES = ["Ada", "Grace", "Alan", "Ken", "Barbara", "Yann", "Fei", "Geoffrey", "Daphne"]
LAST_NAMES = ["Lovelace", "Hopper", "Turing", "Thompson", "Liskov", "Li", "Hinton", "Koller"]
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z-]{3,}")
_GLUE = {
    "with",
    "from",
    "into",
    "using",
    "towards",
    "toward",
    "through",
    "their",
    "your",
    "what",
    "when",
    "does",
    "more",
    "than",
    "that",
    "this",
    "via",
    "beyond",
    "without",
    "large",
}


@dataclass(frozen=True)
class SeedPaper:
    title: str
    abstract: str


def seed_papers() -> list[SeedPaper]:
    """Title and abstract of each seed entry (a title line followed by a long abstract line)."""
    papers: list[SeedPaper] = []
    for path in sorted(SEEDS.iterdir()):
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line]
        for title, abstract in itertools.pairwise(lines):
            if 20 <= len(title) <= 200 and len(abstract) > 400 and not title.endswith("."):
                papers.append(SeedPaper(title, abstract))
    if len(papers) < 100:
        raise RuntimeError(f"only {len(papers)} seed papers found in {SEEDS}")
    return papers


def synthetic_papers(count: int, seed: int = 0) -> Iterator[dict[str, object]]:
    """`count` daily_papers items with unique arXiv ids, published over the last week."""
    rng = random.Random(seed)
    seeds = seed_papers()
    sentences = [_SENTENCE.split(paper.abstract) for paper in seeds]
    start = datetime(2026, 11, 18, tzinfo=UTC)
    for n in range(count):
        one, two = rng.sample(seeds, 2)
        words_one, words_two = one.title.split(), two.title.split()
        cut_one, cut_two = rng.randint(1, len(words_one)), rng.randint(0, len(words_two) - 1)
        title = " ".join(words_one[:cut_one] + words_two[cut_two:])
        parts = [rng.choice(sentences[rng.randrange(len(seeds))]) for _ in range(rng.randint(4, 8))]
        published = start + timedelta(minutes=rng.randrange(7 * 24 * 60))
        authors = [
            {"name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"}
            for _ in range(rng.randint(1, 8))
        ]
        yield {
            "paper": {
                "id": f"26{11 + n // 90000:02d}.{n % 90000 + 10000:05d}",
                "title": title,
                "summary": " ".join(parts),
                "authors": authors,
                "upvotes": int(rng.paretovariate(1.2)) - 1,
                "publishedAt": published.isoformat().replace("+00:00", "Z"),
            },
            "title": title,
            "summary": " ".join(parts),
            "publishedAt": published.isoformat().replace("+00:00", "Z"),
        }


def write_papers(folder: Path, count: int, seed: int = 0, per_file: int = 5000) -> list[Path]:
    """Write `count` papers as daily_papers JSON files of `per_file` items; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    batch: list[dict[str, object]] = []

    def flush() -> None:
        path = folder / f"daily_papers_{len(paths):04d}.json"
        path.write_text(json.dumps(batch), encoding="utf-8")
        paths.append(path)
        batch.clear()

    for item in synthetic_papers(count, seed):
        batch.append(item)
        if len(batch) == per_file:
            flush()
    if batch:
        flush()
    return paths


def topic_pool(size: int) -> list[str]:
    """The realistic topics, then distinctive word pairs of seed titles, `size` in all."""
    pool = list(REALISTIC_TOPICS[:size])
    if size <= len(pool):
        return pool
    pairs: Counter[str] = Counter()
    for paper in seed_papers():
        words = [word.lower() for word in _WORD.findall(paper.title)]
        words = [word for word in words if word not in _GLUE]
        pairs.update(f"{a} {b}" for a, b in itertools.pairwise(words) if a != b)
    for pair, _count in pairs.most_common():
        if len(pool) >= size:
            break
        if pair not in pool:
            pool.append(pair)
    words = Counter(
        word.lower()
        for paper in seed_papers()
        for word in _WORD.findall(paper.title)
        if word.lower() not in _GLUE
    )
    for word, _count in words.most_common():
        if len(pool) >= size:
            break
        if word not in pool:
            pool.append(word)
    return pool


def write_subscribers(path: Path, count: int, topics: list[str], seed: int = 0) -> Path:
    """A `digest subscribers import` CSV of `count` subscribers with 1 to 3 topics each."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "topics", "timezone", "hour", "frequency"])
        for n in range(count):
            chosen = rng.sample(topics, min(len(topics), rng.randint(1, 3)))
            writer.writerow(
                [
                    f"reader{n:06d}@example.org",
                    ";".join(chosen),
                    rng.choice(TIMEZONES),
                    rng.randrange(24),
                    "daily",
                ]
            )
    return path
