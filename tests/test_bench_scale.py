"""`bench/scale.py --smoke`: the scale benchmark's whole pipeline on a tiny corpus.

Real processes throughout: the stages, and the SMTP sink the send goes to. The
figures themselves are for people (see the README); this checks that every one
is printed and that the send delivered each digest exactly once.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_scale_benchmark_runs_end_to_end() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert out.startswith("sqlite: 60 papers, 12 subscribers, 6 topics, 1 worker(s)\n"), out
    for label in (
        "ingest papers",
        "import subscribers",
        "dry run",
        "plan (select, store)",
        "send loop",
        "ceiling (smtplib)",
    ):
        assert re.search(rf"^  {re.escape(label)} +\d+\.\d\d s", out, re.M), (label, out)
    sent = re.search(r"^end to end: +\d+ emails/s \((\d+) sent, (\d+) at the sink\)$", out, re.M)
    assert sent is not None, out
    planned = re.search(r"\(sent (\d+), empty (\d+), deferred 0, failed 0, unknown 0\)", out)
    assert planned is not None, out
    # Every subscriber got a digest or an empty plan; each digest reached the sink once.
    assert int(planned[1]) + int(planned[2]) == 12
    assert sent[1] == sent[2] == planned[1]
    ceiling = re.search(
        r"^transport ceiling: +\d+ emails/s \((\d+) messages over 1 conn", out, re.M
    )
    assert ceiling is not None and ceiling[1] == sent[1], out
    assert re.search(r"^ratio to the ceiling: +\d+\.\d\d$", out, re.M), out
    assert re.search(r"^selection\+rendering: +\d+ digests/s", out, re.M), out
    assert re.search(r"^peak RSS: +\d+ MB sending", out, re.M), out
    cpu = r"^CPU per message: +(\d+\.\d\d) ms sender, (\d+\.\d\d) ms sink while sending; "
    cpu += r"ceiling (\d+\.\d\d) ms smtplib, (\d+\.\d\d) ms sink \(\d+ CPUs\)$"
    used = re.search(cpu, out, re.M)
    assert used is not None and float(used[1]) > 0 and float(used[3]) > 0, out
    naive = r"^naive baseline: .* \(\d+ recipients\); the product .*x faster, after inlining "
    assert re.search(naive + r"\d+ paper cards once per run in \d+\.\d\d s$", out, re.M), out


def test_the_benchmark_sends_to_whom_digest_send_would(tmp_path: Path, db_url: str) -> None:
    """Its due list is `digest send`'s: not a subscriber whose digest of yesterday was
    chosen less than 20 hours ago (`schedule.allowed`)."""
    from bench.scale import NOW, _due
    from digest import db
    from digest.app import App
    from digest.config import load_config
    from digest.models import Delivery
    from digest.subscribers import subscribe

    env = {"DIGEST_DATA_DIR": str(tmp_path / "data"), "DIGEST_DATABASE_URL": db_url}
    app = App.from_config(load_config(None, env), clock=lambda: NOW)
    yesterday = NOW.date() - timedelta(days=1)
    with db.transaction(app.sessions()) as session:
        for address in ("ada@example.org", "bob@example.org", "eve@example.org"):
            subscribe(session, address, ["diffusion"], now=NOW - timedelta(days=9), hour=7)
        for address, chosen in (("bob@example.org", 3), ("eve@example.org", 20)):
            subscriber = db.find_subscriber(session, address)
            assert subscriber is not None
            at = NOW - timedelta(hours=chosen)
            session.add(
                Delivery(
                    subscriber_id=subscriber.id,
                    digest_date=yesterday,
                    status="sent",
                    selected_at=at,
                    created_at=at,
                    updated_at=at,
                )
            )
    with app.sessions()() as session:
        due = [(subscriber.email, day) for subscriber, day in _due(app)(session)]
    app.dispose()
    assert due == [("ada@example.org", NOW.date()), ("eve@example.org", NOW.date())]
