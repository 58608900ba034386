"""`digest send` as real processes against a real SMTP server: crashes, concurrency, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from digest import db
from digest.models import Delivery

READERS = [f"reader{n:02d}@example.org" for n in range(30)]


def write_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[smtp]
host = "127.0.0.1"
port = {port}
starttls = false
timeout = 10
[delivery]
transport = "smtp"
lease_seconds = 2
[site]
secret_key = "test-secret-key-0123456789abcdef"
base_url = "https://digest.example.org"
[mail]
from_address = "digest@papers.example.org"
""",
        encoding="utf-8",
    )
    return config


def environment(tmp_path: Path, config: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DIGEST_DATA_DIR=str(tmp_path / "data"),
        DIGEST_CONFIG=str(config),
        DIGEST_DATABASE_URL=db_url,
    )
    return env


def digest_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ledger(db_url: str) -> dict[str, str]:
    engine = db.open_database(db_url)
    with db.session_factory(engine)() as session:
        rows = {d.subscriber.email: d.status for d in session.scalars(select(Delivery))}
    engine.dispose()
    return rows


@pytest.fixture
def setup(cli, seeds: Path, tmp_path: Path, smtp_server, monkeypatch, db_url: str):
    config = write_config(tmp_path, smtp_server.port)
    monkeypatch.setenv("DIGEST_CONFIG", str(config))
    assert cli("ingest", str(seeds)).exit_code == 0
    for address in READERS:
        assert cli("subscribe", address, "--topic", "*", "--topic", "diffusion").exit_code == 0
    return config, environment(tmp_path, config, db_url)


def test_killed_sender_then_rerun_sends_no_duplicates(setup, smtp_server, db_url) -> None:
    _, env = setup
    victim = READERS[7]
    smtp_server.handler.hold[victim] = 120.0
    first = digest_process(env, "send")
    deadline = time.monotonic() + 60
    while victim not in smtp_server.handler.recipients():
        assert time.monotonic() < deadline, "the sender never reached the victim"
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    first.kill()  # SIGKILL: the server accepted the victim's message, the row is unmarked
    first.communicate(timeout=30)
    assert ledger(db_url)[victim] == "sending"
    del smtp_server.handler.hold[victim]
    time.sleep(2.5)  # the 2-second lease runs out
    rerun = digest_process(env, "send")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 1
    assert out.splitlines()[0] == "sent 22, empty 0, deferred 0, failed 0, unknown 1"
    assert "Error: not every digest was delivered" in err
    counts = Counter(smtp_server.handler.recipients())
    assert set(counts) == set(READERS) and max(counts.values()) == 1
    rows = ledger(db_url)
    assert rows[victim] == "unknown"
    assert Counter(rows.values()) == {"sent": 29, "unknown": 1}
    # A third run resends nothing; --retry-unknown resends the one in-flight message.
    third = digest_process(env, "send")
    assert third.communicate(timeout=60)[0].startswith("sent 0,")
    retry = digest_process(env, "send", "--retry-unknown")
    out, _ = retry.communicate(timeout=60)
    assert retry.returncode == 0 and out.startswith("sent 1,")
    assert Counter(smtp_server.handler.recipients())[victim] == 2


def test_two_senders_at_once_never_send_twice(setup, smtp_server, db_url) -> None:
    _, env = setup
    smtp_server.handler.delay = 0.03
    processes = [digest_process(env, "send"), digest_process(env, "send")]
    outputs = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    sent = [int(out.split(",")[0].split()[1]) for out, _ in outputs]
    assert sum(sent) == 30
    counts = Counter(smtp_server.handler.recipients())
    assert set(counts) == set(READERS) and max(counts.values()) == 1
    assert set(ledger(db_url).values()) == {"sent"}


def test_send_into_the_maildir_outbox(cli, seeds: Path, tmp_path: Path) -> None:
    cli("ingest", str(seeds))
    cli("subscribe", "ada@example.org", "--topic", "diffusion")
    cli("subscribe", "nobody@example.org", "--topic", "quantum chromodynamics")
    dry = cli("send", "--dry-run")
    assert dry.output.splitlines()[0] == "would send 1, empty 1, deferred 0, failed 0, unknown 0"
    result = cli("send")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "sent 1, empty 1, deferred 0, failed 0, unknown 0",
        f"outbox: {tmp_path / 'data' / 'outbox'}",
    ]
    assert len(list((tmp_path / "data" / "outbox" / "new").iterdir())) == 1
    assert cli("send").output.startswith("sent 0, empty 1,")
