"""Selection at scale: cost per subscriber, and topic queries run, as subscribers grow.

Loads the bundled seeds into a temporary SQLite file, subscribes N readers who
share a pool of 12 topics (1 to 3 each), and plans every digest for one day
(selection + shared Digest rows + one Delivery per reader), for two sizes in
the same run. The number of full-text queries should stay at the number of
distinct topics, and the cost per subscriber should stay flat.

Run: .venv/bin/python bench/select_scale.py [--small 200] [--large 2000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import event, func, select

from digest import db
from digest.config import DigestSettings
from digest.ingest import ingest_inputs
from digest.models import Digest
from digest.plan import plan_deliveries
from digest.resources import resource_dir
from digest.subscribers import subscribe

NOW = datetime(2026, 11, 25, 7, tzinfo=UTC)
TOPICS = [
    "diffusion",
    "language model",
    "reinforcement learning",
    "speech",
    "graph",
    "vision transformer",
    "rlhf OR dpo OR preference",
    "quantization",
    "retrieval",
    "robot",
    "*",
    "title:benchmark",
]


def run(size: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as folder:
        engine = db.open_database(f"sqlite:///{Path(folder) / 'b.sqlite3'}")
        factory = db.session_factory(engine)
        ingest_inputs(
            factory, [str(resource_dir("seeds"))], now=NOW - timedelta(hours=1), max_bytes=10**8
        )
        rng = random.Random(size)
        with db.transaction(factory) as session:
            for n in range(size):
                topics = rng.sample(TOPICS, rng.randint(1, 3))
                subscribe(session, f"r{n}@example.org", topics, now=NOW - timedelta(days=1))
        queries = []
        event.listen(
            engine,
            "before_cursor_execute",
            lambda c, cur, statement, *a: (
                queries.append(1)
                if "papers_fts MATCH" in statement
                or statement.startswith("SELECT id FROM papers WHERE")
                else None
            ),
        )
        start = time.perf_counter()
        with db.transaction(factory) as session:
            due = [(s, NOW.date()) for s in db.list_subscribers(session, "active")]
            plan_deliveries(session, due, now=NOW, settings=DigestSettings())
        elapsed = time.perf_counter() - start
        with factory() as session:
            digests = session.scalar(select(func.count()).select_from(Digest)) or 0
        engine.dispose()
        return elapsed / size, len(queries), digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    args = parser.parse_args()
    results = {size: run(size) for size in (args.small, args.large)}
    for size, (per, queries, digests) in results.items():
        print(
            f"{size:>6} subscribers: {per * 1000:6.2f} ms each, {queries} full-text queries, "
            f"{digests} distinct digests stored"
        )
    small, large = results[args.small][0], results[args.large][0]
    print(f"cost per subscriber, {args.large} vs {args.small}: {large / small:.2f}x")


if __name__ == "__main__":
    main()
