"""Several `digest send` processes against one PostgreSQL database share the queue.

Each process plans the day (the ledger's unique row per subscriber and date
keeps one plan), then claims rows with `FOR UPDATE SKIP LOCKED` until none is
left; a real SMTP server counts the copies each recipient gets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from digest import db
from digest.models import Delivery

SENDERS = 4
READERS = [f"reader{n:03d}@example.org" for n in range(80)]


@pytest.mark.postgresql
def test_parallel_senders_share_the_work_and_never_duplicate(
    cli, seeds: Path, tmp_path: Path, smtp_server, monkeypatch, db_url: str
) -> None:
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
    assert cli("ingest", str(seeds)).exit_code == 0
    people = tmp_path / "people.csv"
    people.write_text("email,topics\n" + "".join(f"{a},*\n" for a in READERS), encoding="utf-8")
    assert cli("subscribers", "import", str(people)).exit_code == 0
    smtp_server.handler.delay = 0.05  # 4 s of SMTP time for one sender alone
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        DIGEST_DATA_DIR=str(tmp_path / "data"),
        DIGEST_CONFIG=str(config),
        DIGEST_DATABASE_URL=db_url,
    )
    senders = [
        subprocess.Popen(
            [sys.executable, "-m", "digest", "send"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(SENDERS)
    ]
    outputs = [sender.communicate(timeout=300) for sender in senders]
    assert [sender.returncode for sender in senders] == [0] * SENDERS, outputs
    sent = [int(out.split(",")[0].split()[1]) for out, _ in outputs]
    assert sum(sent) == len(READERS)
    assert sum(1 for count in sent if count) >= 2, sent  # the queue was shared
    copies = Counter(smtp_server.handler.recipients())
    assert set(copies) == set(READERS) and set(copies.values()) == {1}
    engine = db.open_database(db_url)
    with db.session_factory(engine)() as session:
        statuses = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    engine.dispose()
    assert statuses == {"sent": len(READERS)}
