"""Ingest speed: a fresh load of N papers, then the same N again with nothing changed.

Writes N synthetic papers (`bench/synthetic.py`: Hugging Face `daily_papers`
JSON, 5,000 per file) and ingests them exactly as `digest ingest` does
(`ingest_inputs`, one transaction per file, the full-text index kept up to
date), on a fresh database: first every paper is new, then the same files
again an hour later, when every record is unchanged. Then the same files with
every upvote count changed (one new observation per paper). It prints the time,
papers per second, CPU seconds (of this process and of ingest's analysis worker)
and the peak RSS of each, on a temporary SQLite file and, with
--url, on a scratch database of that PostgreSQL server.

With --baseline DIR (a checkout of another version, e.g. `git archive d107dbd`),
every measurement also runs on that version's `digest` package, in the same run
and alternating with this one, so a noisy machine affects both alike.

Each measurement runs in a fresh process, so the RSS is its own.

Run: .venv/bin/python bench/ingest.py [--papers 100000] [--url postgresql://...]
                                      [--baseline /tmp/digest-d107dbd]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NOW = datetime(2026, 11, 25, 7, tzinfo=UTC)
MAX_BYTES = 2**30


def bump_upvotes(source: Path, target: Path) -> list[Path]:
    """Copies of the papers files with every upvote count one higher."""
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in sorted(source.glob("*.json")):
        items = json.loads(path.read_text(encoding="utf-8"))
        for item in items:
            item["paper"]["upvotes"] += 1
        out = target / path.name
        out.write_text(json.dumps(items), encoding="utf-8")
        paths.append(out)
    return paths


def children_cpu() -> float:
    """CPU seconds of this process's finished children (ingest's analysis worker)."""
    times = os.times()
    return times.children_user + times.children_system


def measure(url: str, files: list[str], bumped: list[str]) -> dict[str, object]:
    """In this process: a fresh load, an unchanged re-ingest, an upvote change."""
    from digest import db
    from digest.ingest import ingest_inputs

    engine = db.open_database(url) if url.startswith("sqlite") else db.create_db_engine(url)
    db.upgrade(engine)
    factory = db.session_factory(engine)
    results: dict[str, object] = {"backend": engine.dialect.name}
    runs = (("fresh", files, NOW), ("unchanged", files, NOW + timedelta(hours=1)))
    runs += (("upvotes", bumped, NOW + timedelta(hours=2)),)
    for label, names, now in runs:
        start, cpu, workers = time.perf_counter(), time.process_time(), children_cpu()
        summaries = ingest_inputs(factory, names, now=now, max_bytes=MAX_BYTES)
        results[label] = time.perf_counter() - start
        results[f"{label}_cpu"] = time.process_time() - cpu
        results[f"{label}_workers_cpu"] = children_cpu() - workers
        errors = [s.line() for s in summaries if not s.ok]
        if errors:
            raise SystemExit(f"ingest failed: {errors[0]}")
        results[f"{label}_counts"] = [
            sum(s.new for s in summaries),
            sum(s.updated for s in summaries),
            sum(s.unchanged for s in summaries),
        ]
    with factory() as session:
        results["papers"] = db.stats(session).papers
    engine.dispose()
    results["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["worker_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return results


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    from scratch import scratch_database

    files = sorted(str(p) for p in Path(args.files).glob("*.json"))
    bumped = sorted(str(p) for p in Path(args.bumped).glob("*.json"))
    with scratch_database(args.url) as url:
        print(json.dumps(measure(url, files, bumped)))


def run_worker(tree: Path, files: Path, bumped: Path, url: str | None) -> dict[str, object]:
    """One measurement in a fresh process importing `digest` from `tree`."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    command += ["--files", str(files), "--bumped", str(bumped)]
    if url:
        command += ["--url", url]
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement on {tree} failed:\n{done.stderr.strip()}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def report(label: str, papers: int, result: dict) -> None:
    print(
        f"  {label} ({result['backend']}, {result['papers']} papers stored, "
        f"peak RSS {result['rss_mb']:.0f} MB, its worker's {result['worker_rss_mb']:.0f} MB)"
    )
    for run in ("fresh", "unchanged", "upvotes"):
        seconds, cpu = result[run], result[f"{run}_cpu"]
        workers = result.get(f"{run}_workers_cpu", 0.0)
        new, updated, unchanged = result[f"{run}_counts"]
        print(
            f"    {run:<10} {seconds:7.2f} s {papers / seconds:8.0f} papers/s "
            f"(CPU: this process {cpu:6.2f} s, its worker {workers:5.2f} s)  "
            f"{new} new, {updated} updated, {unchanged} unchanged"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=100_000)
    parser.add_argument(
        "--url", "--postgresql", metavar="URL", help="also on this PostgreSQL server"
    )
    parser.add_argument("--baseline", metavar="DIR", type=Path, help="also this other checkout")
    parser.add_argument("--no-sqlite", action="store_true", help="only the --url server")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--bumped", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(ROOT))
    from bench.synthetic import write_papers

    trees = [("this", ROOT)]
    if args.baseline:
        trees.insert(0, ("baseline", args.baseline.resolve()))
    urls: list[str | None] = [] if args.no_sqlite else [None]
    if args.url:
        urls.append(args.url)
    with tempfile.TemporaryDirectory() as folder:
        files, bumped = Path(folder) / "papers", Path(folder) / "bumped"
        write_papers(files, args.papers)
        bump_upvotes(files, bumped)
        print(f"{args.papers} papers in {len(list(files.glob('*.json')))} HF daily_papers files")
        for url in urls:
            for label, tree in trees:
                report(f"{label} {tree}", args.papers, run_worker(tree, files, bumped, url))


if __name__ == "__main__":
    main()
