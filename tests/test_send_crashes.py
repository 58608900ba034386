"""`digest send` processes killed with SIGKILL at random moments, or stopped with SIGTERM.

The promise under test: without --retry-unknown no recipient ever gets two
copies, and every recipient whose row is not `unknown` gets exactly one.
The moments are random; a failure prints the seed, and DIGEST_CRASH_SEED=N
replays it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from digest import db
from digest.ingest import ingest_inputs
from digest.models import Delivery
from digest.subscribers import subscribe
from tests.processes import DigestProcess
from tests.smtp_server import SmtpServer
from tests.test_cli_send import environment, write_config

READERS = [f"reader{n:02d}@example.org" for n in range(40)]
KILLS = 20


@pytest.fixture
def world(tmp_path: Path, smtp_server: SmtpServer) -> tuple[dict[str, str], str]:
    """40 subscribers to three papers and a config pointing at the test server.

    Returns the environment of the `digest` processes and the database URL.
    """
    data = tmp_path / "data"
    url = f"sqlite:///{data / 'digest.sqlite3'}"
    engine = db.open_database(url)
    factory = db.session_factory(engine)
    now = datetime.now(UTC)
    capture = tmp_path / "capture.json"
    capture.write_text(
        json.dumps([{"title": f"Diffusion {n}", "paper": {"id": f"2603.2{n}"}} for n in range(3)]),
        encoding="utf-8",
    )
    ingest_inputs(factory, [str(capture)], now=now - timedelta(hours=1), max_bytes=10**6)
    with db.transaction(factory) as session:
        for address in READERS:
            subscribe(session, address, ["diffusion"], now=now - timedelta(days=1))
    engine.dispose()
    config = write_config(tmp_path, smtp_server.port, lease_seconds=1)
    return environment(tmp_path, config), url


def ledger(url: str) -> dict[str, str]:
    engine = db.open_database(url)
    with db.session_factory(engine)() as session:
        rows = {d.subscriber.email: d.status for d in session.scalars(select(Delivery))}
    engine.dispose()
    return rows


def test_sigkill_at_twenty_random_moments_never_duplicates(
    world: tuple[dict[str, str], str], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    env, url = world
    seed = int(os.environ.get("DIGEST_CRASH_SEED") or random.randrange(10**6))
    rng = random.Random(seed)
    handler = smtp_server.handler
    moments = []
    for kill in range(KILLS):
        run = DigestProcess.start(env, tmp_path / f"send-{kill}.log", "send")
        if rng.random() < 0.5:
            # Any instant: starting up, planning, claiming, sending, recording.
            moment = rng.uniform(0.0, 1.2)
            time.sleep(moment)
            moments.append(f"{moment:.2f}s")
        else:
            # Just after the server stored a message: accepted, perhaps not yet recorded.
            target = len(handler.messages) + rng.randint(1, 3)
            deadline = time.monotonic() + 30
            while len(handler.messages) < target and run.alive():
                assert time.monotonic() < deadline, run.output()
                time.sleep(0.001)
            moments.append(f"message {target}")
        run.kill()
        copies = handler.copies()
        assert max(copies.values(), default=0) <= 1, (seed, moments, copies.most_common(3))
    # The leases of the killed senders run out; a last run sends everything else.
    time.sleep(1.1)
    last = DigestProcess.start(env, tmp_path / "last.log", "send")
    last.wait()
    rows = ledger(url)
    copies = handler.copies()
    context = (seed, moments, last.output())
    assert set(rows) == set(READERS), context
    assert set(rows.values()) <= {"sent", "unknown"}, context
    for address, status in rows.items():
        expected = {0, 1} if status == "unknown" else {1}
        assert copies[address] in expected, (address, status, copies[address], context)
    unknown = [address for address, status in rows.items() if status == "unknown"]
    assert len(unknown) <= KILLS
    # Resending the unknown rows is a deliberate choice: each gets one more copy.
    before = Counter(copies)
    retry = DigestProcess.start(env, tmp_path / "retry.log", "send", "--retry-unknown")
    assert retry.wait() == 0, retry.output()
    after = handler.copies()
    assert {a: after[a] - before[a] for a in READERS} == {a: int(a in unknown) for a in READERS}, (
        context
    )
    assert set(ledger(url).values()) == {"sent"}


def test_sigterm_settles_the_message_in_flight(
    world: tuple[dict[str, str], str], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    env, url = world
    victim = READERS[5]
    smtp_server.handler.hold[victim] = 1.0  # stored, then the reply waits a second
    run = DigestProcess.start(env, tmp_path / "send.log", "send")
    deadline = time.monotonic() + 60
    while victim not in smtp_server.handler.recipients():
        assert time.monotonic() < deadline and run.alive(), run.output()
        time.sleep(0.005)
    run.terminate()
    assert run.wait() == 1
    output = run.output()
    assert "received SIGTERM: finishing the message in flight" in output
    assert output.rstrip().endswith(
        f"Error: stopped by SIGTERM: the message in flight was recorded; "
        f"{len(READERS) - 6} digests wait for the next run"
    ), output
    rows = ledger(url)
    assert rows[victim] == "sent"  # settled at once, not left `sending` for the lease
    assert Counter(rows.values()) == {"sent": 6, "queued": len(READERS) - 6}
    assert smtp_server.handler.copies() == Counter(READERS[:6])
