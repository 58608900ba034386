"""Start-up time of the command line: `digest --help` against a bare Python.

Runs each command N times, alternating, and prints the best and the median
wall time and their ratio, then the heavy packages that `import digest.cli`
loads (there should be none: the stages load when a command uses them).

Run: .venv/bin/python bench/startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("sqlalchemy", "alembic", "premailer", "cssutils", "Stemmer", "jinja2", "flask", "lxml")


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    digest = shutil.which("digest", path=str(Path(sys.executable).parent)) or "digest"
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "digest --help": [digest, "--help"],
        "digest send --help": [digest, "send", "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(wall(command))
    base = min(times["python -c pass"])
    print(f"{'command':<20} {'best':>8} {'median':>8} {'best/bare':>10}")
    for name, samples in times.items():
        best = min(samples)
        print(
            f"{name:<20} {best * 1000:7.0f}ms {statistics.median(samples) * 1000:7.0f}ms "
            f"{best / base:9.1f}x"
        )
    probe = (
        "import sys, digest.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    heavy = sorted(loaded.intersection(HEAVY))
    print(f"heavy packages loaded by `import digest.cli`: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
