"""bench/ingest.py at a tiny size: it runs, and every measured run did what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_SERVER_URL

ROOT = Path(__file__).resolve().parent.parent


def test_the_ingest_benchmark_runs_at_a_tiny_size() -> None:
    command = [sys.executable, str(ROOT / "bench" / "ingest.py"), "--papers", "30"]
    if TEST_SERVER_URL:
        command += ["--url", TEST_SERVER_URL, "--no-sqlite"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "30 papers in 1 HF daily_papers files"
    backend = "postgresql" if TEST_SERVER_URL else "sqlite"
    assert f"({backend}, 30 papers stored, peak RSS" in lines[1]
    outcomes = [line.split("s)  ", 1)[1] for line in lines[2:]]
    assert outcomes == [
        "30 new, 0 updated, 0 unchanged",
        "0 new, 0 updated, 30 unchanged",
        "0 new, 30 updated, 0 unchanged",
    ]
    assert [line.split()[0] for line in lines[2:]] == ["fresh", "unchanged", "upvotes"]
