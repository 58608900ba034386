"""Load on the web front: N concurrent people subscribing at once to a real `digest serve`.

Starts `digest serve` on a free port over a fresh SQLite database holding the seeds
(with the per-IP subscribe limit raised, since every request comes from 127.0.0.1),
then runs N threads that each load the form (for its CSRF cookie and token) and
submit it, all released at the same moment. Prints the status codes, latency
percentiles and throughput, and exits 1 if any request failed with a 5xx or an
error, or the server died.

    python bench/web_load.py            # 200 concurrent subscribers
    python bench/web_load.py --people 500
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def subscriber(base: str, n: int, start: threading.Barrier, results: list) -> None:
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    try:
        form = opener.open(base + "/", timeout=60).read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token, "no CSRF token on the form"
        body = urllib.parse.urlencode(
            {
                "csrf_token": token.group(1),
                "email": f"load{n:04d}@example.org",
                "topic": "diffusion model" if n % 2 else "llm agents",
                "timezone": "Europe/Paris",
                "hour": str(n % 24),
                "frequency": "daily",
            }
        ).encode()
        start.wait()
        began = time.perf_counter()
        try:
            with opener.open(base + "/", data=body, timeout=120) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        results.append((status, time.perf_counter() - began))
    except Exception as exc:  # a refused or dropped connection counts as a failure
        results.append((f"error: {exc.__class__.__name__}", 0.0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=200)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="digest-web-load-"))
    config = work / "config.toml"
    config.write_text(
        '[web]\nsubscribe_rate_limit = "100000 per minute"\nthreads = 8\n'
        '[site]\nsecret_key = "load-test-key-0123456789abcdefghijklmnopq"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(DIGEST_DATA_DIR=str(work / "data"), DIGEST_CONFIG=str(config))
    digest = [sys.executable, "-m", "digest"]
    subprocess.run(
        [*digest, "ingest", str(ROOT / "seeds")], env=env, check=True, capture_output=True
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*digest, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(base + "/", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        results: list = []
        start = threading.Barrier(args.people + 1)
        threads = [
            threading.Thread(target=subscriber, args=(base, n, start, results))
            for n in range(args.people)
        ]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        alive = server.poll() is None
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)

    codes = Counter(status for status, _ in results)
    latencies = sorted(seconds for status, seconds in results if status == 200)
    print(
        f"{args.people} concurrent subscribe requests in {elapsed:.2f} s "
        f"({args.people / elapsed:.0f} requests/s); server alive afterwards: {alive}"
    )
    print("status codes:", dict(sorted(codes.items(), key=str)))
    if latencies:
        print(
            f"latency: median {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {latencies[int(len(latencies) * 0.95) - 1] * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms"
        )
    failed = [status for status in codes if not (isinstance(status, int) and status < 500)]
    if failed or not alive:
        print("FAILED:", failed, errors[-2000:])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
