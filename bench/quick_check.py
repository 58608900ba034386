"""The quick check at open: what SQLite's `PRAGMA quick_check` costs as the database grows.

Every command that opens the SQLite database runs it once (`App.engine`), so a
damaged file is refused before anything is written into it. It reads every
page, so its cost grows with the file: this measures it for a database of the
bundled seeds grown with synthetic papers (title, abstract, authors, and the
full-text index that follows them) to a few sizes.

Run: .venv/bin/python bench/quick_check.py [--sizes 20 100 300]   (MB)
"""

from __future__ import annotations

import argparse
import itertools
import random
import string
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from digest import db
from digest.ingest import ingest_inputs
from digest.resources import resource_dir

NOW = datetime(2026, 11, 25, 7, tzinfo=UTC)
BATCHES = itertools.count()


def words(rng: random.Random, count: int) -> str:
    return " ".join(
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(count)
    )


def grow(path: Path, megabytes: int, rng: random.Random) -> None:
    """Add synthetic papers until the file is at least `megabytes` large."""
    engine = db.create_db_engine(f"sqlite:///{path}")
    while path.stat().st_size < megabytes * 1_000_000:
        batch = next(BATCHES)
        rows = [
            {
                "key": f"title:bench {batch} {n}",
                "title_key": f"bench {batch} {n}",
                "title": words(rng, 10),
                "abstract": words(rng, 200),
                "authors": "\n".join(words(rng, 2) for _ in range(5)),
                "first_seen_at": NOW.replace(tzinfo=None),
                "updated_at": NOW.replace(tzinfo=None),
            }
            for n in range(500)
        ]
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO papers (key, title_key, title, abstract, authors, categories, "
                    "first_seen_at, updated_at) VALUES (:key, :title_key, :title, :abstract, "
                    ":authors, '', :first_seen_at, :updated_at)"
                ),
                rows,
            )
        with engine.connect() as connection:  # into the main file, so its size counts
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100, 300])
    args = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.sqlite3"
        engine = db.open_database(f"sqlite:///{path}")
        ingest_inputs(
            db.session_factory(engine), [str(resource_dir("seeds"))], now=NOW, max_bytes=10**8
        )
        engine.dispose()
        print(f"{'size MB':>8}  {'quick_check s':>13}  {'s per 100 MB':>12}")
        for size in sorted(args.sizes):
            grow(path, size, rng)
            engine = db.create_db_engine(f"sqlite:///{path}")
            db.integrity_problems(engine)  # warm the page cache, as a second command would
            started = time.perf_counter()
            problems = db.integrity_problems(engine)
            elapsed = time.perf_counter() - started
            engine.dispose()
            assert problems == [], problems
            megabytes = path.stat().st_size / 1_000_000
            print(f"{megabytes:8.0f}  {elapsed:13.3f}  {elapsed / megabytes * 100:12.3f}")


if __name__ == "__main__":
    main()
