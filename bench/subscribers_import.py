"""Bulk subscriber import and export: rows per second for 10k subscribers.

Writes a CSV of N subscribers (1 to 3 topics from a pool, several timezones,
hours and frequencies, some names), then times, on a fresh database:
the first import (all added), the same file again (all unchanged), a file
where every subscriber has other topics and hours (all updated), and the
export. Every run goes through `import_subscribers` exactly as
`digest subscribers import` does, in batches of 1000 rows per transaction.

Runs on a temporary SQLite file, or on PostgreSQL when given a server URL (it
creates and drops a scratch database there).

Run: .venv/bin/python bench/subscribers_import.py [--rows 10000] [--postgresql URL]
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from scratch import scratch_database

from digest import db
from digest.subscribers_csv import COLUMNS, export_subscribers, import_subscribers

NOW = datetime(2026, 11, 25, 7, tzinfo=UTC)
TOPICS = [
    "Diffusion=diffusion",
    "LLM=language model",
    "reinforcement learning",
    "speech",
    "graph neural",
    "vision transformer",
    "RLHF=rlhf OR dpo OR preference",
    "quantization",
    "retrieval -survey",
    "robot*",
    "*",
    "title:benchmark",
]
ZONES = ["UTC", "Europe/London", "America/Los_Angeles", "Asia/Kolkata", "Australia/Sydney"]
FREQUENCIES = ["daily", "daily", "daily", "weekly (mon)", "weekly fri"]


def write_csv(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for n in range(rows):
            writer.writerow(
                (
                    f"Reader.{n}@Example.org",
                    "; ".join(rng.sample(TOPICS, rng.randint(1, 3))),
                    rng.choice(ZONES),
                    rng.randint(5, 9),
                    rng.choice(FREQUENCIES),
                    f"Reader {n}" if n % 3 else "",
                    "active",
                )
            )


def timed_import(factory, path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    report = import_subscribers(factory, path, now=NOW, default_timezone="UTC", default_hour=7)
    elapsed = time.perf_counter() - start
    assert not report.errors, report.errors[:3]
    return elapsed, report.line()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--postgresql", metavar="URL", help="a PostgreSQL server database URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, scratch_database(args.postgresql) as url:
        first, changed = Path(folder) / "first.csv", Path(folder) / "changed.csv"
        write_csv(first, args.rows, seed=1)
        write_csv(changed, args.rows, seed=2)
        engine = db.open_database(url) if url.startswith("sqlite") else db.create_db_engine(url)
        db.upgrade(engine)
        factory = db.session_factory(engine)
        print(f"{engine.dialect.name}, {args.rows} rows:")
        for label, path in (("first import", first), ("same file", first), ("changed", changed)):
            elapsed, line = timed_import(factory, path)
            print(f"  {label:<13} {elapsed:6.2f} s  {args.rows / elapsed:8.0f} rows/s  ({line})")
        out = io.StringIO()
        start = time.perf_counter()
        with factory() as session:
            count = export_subscribers(session, out)
        elapsed = time.perf_counter() - start
        print(f"  {'export':<13} {elapsed:6.2f} s  {count / elapsed:8.0f} rows/s")
        engine.dispose()


if __name__ == "__main__":
    main()
