"""Several `digest send` processes (and `--workers` sender processes) share the queue.

Each process plans the day (the ledger's unique row per subscriber and date
keeps one plan), then claims rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL) until
none is left; a real SMTP server counts the copies each recipient gets and the
connections (one per sender process).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from digest import db
from digest.models import Delivery
from tests.processes import digest_env

SENDERS = 4
READERS = [f"reader{n:03d}@example.org" for n in range(80)]


def prepare(
    cli,
    seeds: Path,
    tmp_path: Path,
    smtp_server,
    monkeypatch,
    db_url: str,
    *,
    as_of: datetime | None = None,
) -> dict:
    """80 readers of every paper; the environment of `digest` processes.

    With `as_of`, the papers are first seen then and the readers are sent to at its
    hour (UTC), so that the scheduler's dispatcher finds them due.
    """
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[smtp]
host = "127.0.0.1"
port = {smtp_server.port}
starttls = false
timeout = 30
[delivery]
transport = "smtp"
[site]
secret_key = "test-secret-key-0123456789abcdef"
[mail]
from_address = "digest@papers.example.org"
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("DIGEST_CONFIG", str(config))
    seen = ("--as-of", as_of.isoformat()) if as_of else ()
    assert cli("ingest", str(seeds), *seen).exit_code == 0
    hour = as_of.hour if as_of else ""
    people = tmp_path / "people.csv"
    people.write_text(
        "email,topics,timezone,hour\n" + "".join(f"{a},*,UTC,{hour}\n" for a in READERS),
        encoding="utf-8",
    )
    assert cli("subscribers", "import", str(people)).exit_code == 0
    smtp_server.handler.delay = 0.05  # 4 s of SMTP time for one sender alone
    env = digest_env(tmp_path / "data", db_url, config)
    return env


def run_at_once(env: dict, count: int, *options: str) -> list[tuple[int, str, str]]:
    """`count` concurrent `digest send` processes: (exit code, stdout, stderr) of each."""
    senders = [
        subprocess.Popen(
            [sys.executable, "-m", "digest", "send", *options],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    outputs = [sender.communicate(timeout=300) for sender in senders]
    return [(sender.returncode, *output) for sender, output in zip(senders, outputs, strict=True)]


def statuses(db_url: str) -> dict[str, int]:
    engine = db.open_database(db_url)
    with db.session_factory(engine)() as session:
        counts = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    engine.dispose()
    return counts


@pytest.mark.postgresql
def test_parallel_senders_share_the_work_and_never_duplicate(
    cli, seeds: Path, tmp_path: Path, smtp_server, monkeypatch, db_url: str
) -> None:
    env = prepare(cli, seeds, tmp_path, smtp_server, monkeypatch, db_url)
    outputs = run_at_once(env, SENDERS)
    assert [code for code, _, _ in outputs] == [0] * SENDERS, outputs
    sent = [int(out.split(",")[0].split()[1]) for _, out, _ in outputs]
    assert sum(sent) == len(READERS)
    assert sum(1 for count in sent if count) >= 2, sent  # the queue was shared
    copies = Counter(smtp_server.handler.recipients())
    assert set(copies) == set(READERS) and set(copies.values()) == {1}
    assert statuses(db_url) == {"sent": len(READERS)}


@pytest.mark.postgresql
def test_hosts_with_several_workers_each_never_duplicate(
    cli, seeds: Path, tmp_path: Path, smtp_server, monkeypatch, db_url: str
) -> None:
    """Two hosts' `digest send --workers 2` at once: four sender processes, one queue."""
    env = prepare(cli, seeds, tmp_path, smtp_server, monkeypatch, db_url)
    outputs = run_at_once(env, 2, "--workers", "2")
    assert [code for code, _, _ in outputs] == [0, 0], outputs
    sent = [int(out.split(",")[0].split()[1]) for _, out, _ in outputs]
    assert sum(sent) == len(READERS), outputs
    copies = Counter(smtp_server.handler.recipients())
    assert set(copies) == set(READERS) and set(copies.values()) == {1}
    # Each sender process holds its own connection (100 messages each at most): more
    # than one sent.
    assert 2 <= smtp_server.handler.sessions <= 4, smtp_server.handler.sessions
    assert statuses(db_url) == {"sent": len(READERS)}


def test_workers_share_one_queue(
    cli, seeds: Path, tmp_path: Path, smtp_server, monkeypatch, db_url: str
) -> None:
    """`digest send --workers 3` (on either database): everyone once, by several processes."""
    env = prepare(cli, seeds, tmp_path, smtp_server, monkeypatch, db_url)
    [(code, out, err)] = run_at_once(env, 1, "--workers", "3")
    assert code == 0, (out, err)
    assert out.startswith(f"sent {len(READERS)}, empty 0, deferred 0, failed 0, unknown 0")
    copies = Counter(smtp_server.handler.recipients())
    assert set(copies) == set(READERS) and set(copies.values()) == {1}
    assert 2 <= smtp_server.handler.sessions <= 3, smtp_server.handler.sessions
    assert statuses(db_url) == {"sent": len(READERS)}


def test_the_service_sends_with_its_workers(
    cli, seeds: Path, tmp_path: Path, smtp_server, monkeypatch, db_url: str
) -> None:
    """`digest run` with `[delivery] workers = 2`: the dispatcher's send uses two processes."""
    started = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    env = prepare(cli, seeds, tmp_path, smtp_server, monkeypatch, db_url, as_of=started)
    config = Path(env["DIGEST_CONFIG"])
    config.write_text(
        config.read_text(encoding="utf-8").replace("[delivery]\n", "[delivery]\nworkers = 2\n"),
        encoding="utf-8",
    )
    service = subprocess.Popen(
        [sys.executable, "-m", "digest", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(smtp_server.handler.messages) < len(READERS):
        assert time.monotonic() < deadline and service.poll() is None, service.communicate()
        time.sleep(0.1)
    time.sleep(0.5)  # a duplicate, if any, would arrive now
    service.send_signal(signal.SIGTERM)
    _, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    copies = Counter(smtp_server.handler.recipients())
    assert set(copies) == set(READERS) and set(copies.values()) == {1}
    assert 2 <= smtp_server.handler.sessions <= 3, smtp_server.handler.sessions
    assert statuses(db_url) == {"sent": len(READERS)}
