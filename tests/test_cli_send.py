"""`digest send` as real processes against a real SMTP server: crashes, concurrency, exit codes."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from digest import db
from digest.models import Delivery
from digest.subscribers import subscribe
from tests.processes import DigestProcess, digest_env

READERS = [f"reader{n:02d}@example.org" for n in range(30)]


def write_config(tmp_path: Path, port: int, lease_seconds: int = 2) -> Path:
    """SMTP to the test server on `port`, short leases, a signing key."""
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
lease_seconds = {lease_seconds}
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
    env = digest_env(tmp_path / "data", db_url, config)
    return env


def report_line(output: str) -> str:
    """The `sent N, ...` line of a send's output (start-up warnings may come before it)."""
    return next(line for line in output.splitlines() if line.startswith("sent "))


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
    assert cli("ingest", str(seeds / "000_5ed1fa5957327774.txt")).exit_code == 0
    engine = db.open_database(db_url)
    with db.transaction(db.session_factory(engine)) as session:
        for address in READERS:
            subscribe(session, address, ["*", "diffusion"], now=datetime.now(UTC))
    engine.dispose()
    return config, environment(tmp_path, config, db_url)


def test_killed_sender_then_rerun_sends_no_duplicates(setup, smtp_server, tmp_path, db_url) -> None:
    _, env = setup
    victim = READERS[7]
    smtp_server.handler.hold[victim] = 120.0
    first = DigestProcess.start(env, tmp_path / "first.log", "send")
    deadline = time.monotonic() + 60
    while victim not in smtp_server.handler.recipients():
        assert time.monotonic() < deadline, "the sender never reached the victim"
        assert first.alive(), first.output()
        time.sleep(0.01)
    first.kill()  # SIGKILL: the server accepted the victim's message, the row is unmarked
    assert ledger(db_url)[victim] == "sending"
    del smtp_server.handler.hold[victim]
    time.sleep(2.1)  # the 2-second lease runs out
    rerun = DigestProcess.start(env, tmp_path / "rerun.log", "send")
    assert rerun.wait() == 1
    assert "sent 22, empty 0, deferred 0, failed 0, unknown 1\n" in rerun.output()
    assert "Error: not every digest was delivered" in rerun.output()
    counts = Counter(smtp_server.handler.recipients())
    assert set(counts) == set(READERS) and max(counts.values()) == 1
    rows = ledger(db_url)
    assert rows[victim] == "unknown"
    assert Counter(rows.values()) == {"sent": 29, "unknown": 1}
    # A third run resends nothing; --retry-unknown resends the one in-flight message.
    third = DigestProcess.start(env, tmp_path / "third.log", "send")
    third.wait()
    assert report_line(third.output()).startswith("sent 0,")
    retry = DigestProcess.start(env, tmp_path / "retry.log", "send", "--retry-unknown")
    assert retry.wait() == 0 and report_line(retry.output()).startswith("sent 1,")
    assert Counter(smtp_server.handler.recipients())[victim] == 2


def test_two_senders_at_once_never_send_twice(setup, smtp_server, tmp_path, db_url) -> None:
    _, env = setup
    smtp_server.handler.delay = 0.03
    processes = [DigestProcess.start(env, tmp_path / f"{n}.log", "send") for n in range(2)]
    codes = [p.wait(180) for p in processes]
    assert codes == [0, 0], [p.output() for p in processes]
    sent = [int(report_line(p.output()).split(",")[0].split()[1]) for p in processes]
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
    # Again: nothing sent, and the row found empty before is not counted again.
    assert cli("send").output.startswith("sent 0, empty 0, deferred 0, failed 0, unknown 0\n")


def test_moving_west_after_todays_digest_sends_no_earlier_date(cli, seeds: Path, tmp_path) -> None:
    with freeze_time("2026-11-27 02:01:00"):
        cli("ingest", str(seeds))
        cli("subscribe", "ada@example.org", "--topic", "*", "--timezone", "UTC", "--hour", "2")
        assert cli("send").output.startswith("sent 1, empty 0,")
    with freeze_time("2026-11-27 02:07:00"):
        # Still Thursday 26th in Los Angeles: that date comes before the one Ada has.
        moved = cli(
            "subscribe", "ada@example.org", "--topic", "*",
            "--timezone", "America/Los_Angeles", "--hour", "18",
        )  # fmt: skip
        assert moved.exit_code == 0, moved.output
        assert cli("send").output.startswith("sent 0, empty 0,")
    with freeze_time("2026-11-28 22:00:00"):  # Saturday 28th, 14:00 in Los Angeles
        # Saturday's is planned (every seed paper went out on Friday: nothing new).
        assert cli("send").output.startswith("sent 0, empty 1,")
    assert len(list((tmp_path / "data" / "outbox" / "new").iterdir())) == 1


def test_internationalized_addresses_into_the_outbox(cli, seeds: Path, tmp_path: Path) -> None:
    """The issue's poison message: a UTF-8 local part and an IDN domain, then everyone else."""
    cli("ingest", str(seeds / "000_5ed1fa5957327774.txt"))
    for address in ("josé@exämple.org", "bob@exämple.org", "ada@example.org"):
        assert cli("subscribe", address, "--topic", "*").exit_code == 0
    result = cli("send")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("sent 3, empty 0, deferred 0, failed 0, unknown 0\n")
    raws = [path.read_bytes() for path in (tmp_path / "data" / "outbox" / "new").iterdir()]
    to = sorted(line for raw in raws for line in raw.split(b"\r\n") if line.startswith(b"To:"))
    assert to == [
        b"To: ada@example.org",
        b"To: bob@xn--exmple-cua.org",
        "To: josé@exämple.org".encode(),
    ]
    preview = cli("preview", "--email", "josé@exämple.org", "--format", "eml")
    assert preview.exit_code == 0, preview.output
    eml = Path(preview.output.splitlines()[1]).read_text(encoding="utf-8")
    assert "\nTo: josé@exämple.org\n" in eml


@pytest.mark.sqlite
def test_data_dir_created_privately_when_first_needed(
    cli, seeds: Path, tmp_path: Path, monkeypatch
) -> None:
    """DIGEST_DATA_DIR not there yet, the database elsewhere: created 0700 for the outbox."""
    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{tmp_path / 'db' / 'digest.sqlite3'}")
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "not" / "yet" / "data"))
    monkeypatch.setenv("DIGEST_SECRET_KEY", "a-signing-key-of-at-least-32-bytes-000")
    cli("ingest", str(seeds / "000_5ed1fa5957327774.txt"))
    cli("subscribe", "ada@example.org", "--topic", "*")
    result = cli("send")
    assert result.exit_code == 0, result.output
    data = tmp_path / "not" / "yet" / "data"
    assert data.stat().st_mode & 0o777 == 0o700
    assert len(list((data / "outbox" / "new").iterdir())) == 1
    assert (tmp_path / "db" / "digest.sqlite3").stat().st_mode & 0o777 == 0o600


def broken_and_ada(cli, seeds: Path, db_url: str, breakage: str) -> None:
    """Papers, mars@ and ada@ following everything, then `breakage` (SQL) behind the app's back."""
    cli("ingest", str(seeds / "000_5ed1fa5957327774.txt"))
    for address in ("mars@example.org", "ada@example.org"):
        cli("subscribe", address, "--topic", "*")
    engine = db.open_database(db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(breakage)
    engine.dispose()


def test_a_stored_timezone_that_no_longer_loads_leaves_out_that_subscriber_only(
    cli, seeds: Path, db_url: str
) -> None:
    """Written by hand or an older version: it must not stop everyone else's digest."""
    broken_and_ada(
        cli,
        seeds,
        db_url,
        "UPDATE subscribers SET timezone = 'Mars/Olympus' WHERE email = 'mars@example.org'",
    )
    result = cli("send")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        "sent 1, empty 0, deferred 0, failed 0, unknown 0, left out 1"
    )
    assert result.stderr.splitlines() == [
        "mars@example.org left out: unknown timezone 'Mars/Olympus' (fix it with: digest "
        "subscribe mars@example.org --topic ... --timezone Europe/Paris)",
        "Error: not every digest was delivered; see `digest status`",
    ]
    assert cli("status").exit_code == 0
    preview = cli("preview", "--email", "mars@example.org")
    assert preview.exit_code == 1 and "unknown timezone 'Mars/Olympus'" in preview.stderr


def test_a_stored_topic_that_no_longer_parses_fails_that_subscriber_only(
    cli, seeds: Path, db_url: str
) -> None:
    broken_and_ada(
        cli,
        seeds,
        db_url,
        "UPDATE topics SET query = 'title:' WHERE subscriber_id = "
        "(SELECT id FROM subscribers WHERE email = 'mars@example.org')",
    )
    result = cli("send")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == "sent 1, empty 0, deferred 0, failed 1, unknown 0"
    status = cli("status").output.splitlines()
    assert status[-1].split()[:4] == ["mars@example.org", status[-1].split()[1], "failed", "0"]
    assert "  not planned: 'title:' needs a word or" in status[-1]
    assert cli("send").stdout.startswith("sent 0, empty 0, deferred 0, failed 1,")
