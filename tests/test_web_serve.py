"""`digest serve` and `digest run --serve` as processes: they answer, warn, stop cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.processes import digest_env
from tests.smtp_server import free_port


def start(
    tmp_path: Path, *args: str, base_url: str, db_url: str
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = digest_env(
        tmp_path / "data",
        db_url,
        DIGEST_BASE_URL=base_url,
        DIGEST_SECRET_KEY="serve-test-key-0123456789abcdefghijklmnop",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", *args, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(address + "/", timeout=2) as response:
                assert response.status == 200
            return process, address
        except (urllib.error.URLError, ConnectionError):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the web front did not come up"
            time.sleep(0.2)


def test_run_serve_runs_scheduler_and_web_and_stops_on_sigterm(tmp_path: Path, db_url) -> None:
    process, address = start(
        tmp_path, "run", "--serve", base_url="http://digest.example.org", db_url=db_url
    )
    with urllib.request.urlopen(address + "/api/match?q=diffusion", timeout=5) as response:
        assert response.status == 200
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "digest run: dispatching every 5 min" in err
    assert "digest serve: listening on http://127.0.0.1:" in err
    # A public http base URL breaks RFC 8058 one-click unsubscribe: say so at start-up.
    assert "site.base_url http://digest.example.org is not https" in err


def test_serve_on_a_local_base_url_does_not_warn(tmp_path: Path, db_url) -> None:
    process, _ = start(tmp_path, "serve", base_url="http://localhost:8000", db_url=db_url)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "not https" not in err


def test_a_port_in_use_or_a_bad_host_is_one_line_and_nothing_runs(tmp_path: Path, db_url) -> None:
    """`digest serve` and `digest run --serve` bind before anything starts: a port taken by
    another program, or a host that does not resolve, is one line and exit 1 (run --serve
    bound in its web thread, printing a traceback while the scheduler ran on)."""
    env = digest_env(
        tmp_path / "data",
        db_url,
        DIGEST_BASE_URL="http://localhost:8000",
        DIGEST_SECRET_KEY="serve-test-key-0123456789abcdefghijklmnop",
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in (("serve",), ("run", "--serve")):
            for host, reason in (
                (["--host", "127.0.0.1"], "Address already in use"),
                (
                    ["--host", "not a host"],
                    "Invalid host/port specified.",
                ),
            ):
                done = subprocess.run(
                    [sys.executable, "-m", "digest", *command, *host, "--port", str(port)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                lines = done.stderr.strip().splitlines()
                assert done.returncode == 1, (command, host, done.stderr)
                assert lines[-1] == (
                    f"Error: cannot listen on host '{host[1]}', port {port}: {reason}"
                ), (command, host)
                assert "Traceback" not in done.stderr
                assert "dispatching" not in done.stderr
