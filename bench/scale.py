"""The daily send at scale: ingest, selection and rendering, the send over SMTP, memory.

Generates a synthetic corpus (bench/synthetic.py: papers stitched from the seed
vocabulary, a pool of topic queries, subscribers with 1 to 3 topics in several
timezones), then runs each stage in its own process against one database:

1. ingest the papers and import the subscribers;
2. a dry run of the daily send (selection and rendering alone, nothing written);
3. the naive baseline: render and inline (premailer) each recipient's digest anew,
   for a sample of recipients, against the product (each paper card inlined once
   per run, as the send does, then each message assembled from cached parts);
4. the daily send (`digest send`'s code path) to an SMTP sink running in a separate
   process, with `--workers` sender processes;
5. the transport ceiling: the same messages, built beforehand, pushed by a plain
   smtplib loop to the same sink over the same number of connections (one loop
   per sender process, running side by side).

It prints digests/s of the dry run, end-to-end emails/s, the ceiling and the ratio,
peak RSS of the sending process (and of its workers), time per stage, and the
naive baseline with the speed-up per recipient. The clock is pinned (NOW), so two
runs do the same work. SQLite in a temporary folder by default; `--url` runs
against an EMPTY PostgreSQL database (the bench refuses one holding papers).

Run:   .venv/bin/python bench/scale.py [--papers 2000] [--subscribers 1000]
       .venv/bin/python bench/scale.py --subscribers 10000 --url postgresql://...
       .venv/bin/python bench/scale.py --smoke      (seconds; what CI runs)
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import os
import pstats
import resource
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: `python bench/scale.py`
    sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 11, 25, 7, tzinfo=UTC)  # the synthetic papers are published 18-25 Nov
FROM = "digest@papers.example.org"


# --- the SMTP sink, a separate process ---------------------------------------------------


def run_sink() -> None:
    """An aiosmtpd server that accepts and counts every message; prints its port, then,
    on SIGTERM, the number of messages it accepted."""
    from aiosmtpd.controller import Controller

    class Counter:
        messages = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            Counter.messages += 1
            return "250 2.0.0 accepted"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: print(Counter.messages, flush=True))
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    controller.stop()


@dataclass
class Sink:
    process: subprocess.Popen[str]
    port: int

    @classmethod
    def start(cls) -> Sink:
        process = subprocess.Popen(
            [sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        return cls(process, int(process.stdout.readline()))

    def received(self) -> int:
        """How many messages the sink accepted so far."""
        assert self.process.stdout is not None
        self.process.send_signal(signal.SIGUSR1)
        return int(self.process.stdout.readline())

    def cpu(self) -> float:
        """CPU seconds the sink has used so far (Linux: /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=30)


# --- the stages, each in its own process ----------------------------------------------


def _now() -> datetime:
    """The pinned clock (a module function: sender processes are spawned with it)."""
    return NOW


def _app(config: Path) -> Any:
    from digest.app import App
    from digest.config import load_config

    return App.from_config(load_config(config), clock=_now)


def _due(app: Any) -> Any:
    """The due subscribers, streamed as `digest send` streams them (with its rules:
    `schedule.allowed_today`)."""
    from digest import db
    from digest.days import is_due_today
    from digest.schedule import allowed_today
    from digest.subscribers import sendable

    grace = timedelta(hours=app.config.schedule.grace_hours)

    def due(session: Any) -> Iterator[tuple[Any, Any]]:
        today = (
            subscriber
            for subscriber in db.iter_subscribers(session, "active")
            if sendable([subscriber]) and is_due_today(subscriber, NOW)
        )
        yield from allowed_today(session, today, NOW, grace)

    return due


def stage_ingest(config: Path, papers: Path, people: Path) -> dict[str, Any]:
    from sqlalchemy import func, select

    from digest import db
    from digest.models import Paper
    from digest.subscribers_csv import import_subscribers

    app = _app(config)
    engine = db.create_db_engine(app.config.database_url)
    db.upgrade(engine)  # a server database is not upgraded on first use
    engine.dispose()
    with app.sessions()() as session:
        if session.scalar(select(func.count()).select_from(Paper)):
            raise SystemExit("the database already holds papers: give the bench an empty one")
    start = time.perf_counter()
    app.ingest([str(papers)], NOW - timedelta(hours=1))
    ingested = time.perf_counter()
    report = import_subscribers(
        app.sessions(),
        people,
        now=NOW - timedelta(days=1),
        default_timezone="UTC",
        default_hour=7,
    )
    done = time.perf_counter()
    return {
        "ingest_s": ingested - start,
        "import_s": done - ingested,
        "subscribers": report.added,
    }


def stage_dry_run(config: Path) -> dict[str, Any]:
    from digest.deliver import send_digests

    app = _app(config)
    app.engine()
    sender = app.sender()
    start = time.perf_counter()
    report = send_digests(sender, _due(app), now=NOW, settings=app.config.digest, dry_run=True)
    elapsed = time.perf_counter() - start
    return {"dry_run_s": elapsed, "digests": report.sent, "empty": report.empty}


def stage_naive(config: Path, sample: int) -> dict[str, Any]:
    """Each recipient's message made naively (render their digest and inline it whole with
    premailer, build the MIME message) and by the product (cached parts), for the same
    recipients and selections, interleaved so that machine noise hits both alike."""
    from digest import db
    from digest.select import SelectionRun

    app = _app(config)
    naive_mailer = app.mailer()
    naive_mailer.renderer.parts = None  # every digest rendered and inlined whole
    product = app.mailer()
    settings = app.config.digest
    with app.sessions()() as session:
        due = list(itertools.islice(_due(app)(session), sample))
        run = SelectionRun(session, NOW, settings)
        chosen = [(s, day, run.select(s, day)) for s, day in due]
        chosen = [(s, day, selection) for s, day, selection in chosen if selection.items]
        # Once per run, as the send does: inline the paper cards in few premailer runs.
        start = time.perf_counter()
        shown = {item.paper_id for _, _, selection in chosen for item in selection.items}
        cards = product.renderer.warm(
            [(selection.items, False) for _, _, selection in chosen],
            product.papers(session, shown),
        )
        warm = time.perf_counter() - start
        naive = cached = 0.0
        for subscriber, day, selection in chosen:
            start = time.perf_counter()
            papers = db.papers_by_id(session, [item.paper_id for item in selection.items])
            rendered = naive_mailer.renderer.render(
                selection.items,
                papers,
                digest_date=day,
                weekly=False,
                more=selection.more,
                base_url=naive_mailer.base_url,
            )
            naive_mailer.message(subscriber, rendered, day, NOW).as_bytes()
            middle = time.perf_counter()
            rendered = product.render_items(
                session, selection.content_hash, selection.items, day, False, selection.more
            )
            product.encoded(subscriber, rendered, day, NOW)
            naive, cached = naive + middle - start, cached + time.perf_counter() - middle
    return {
        "naive_s": naive,
        "product_s": cached,
        "warm_s": warm,
        "cards": cards,
        "naive_recipients": len(chosen),
    }


def _cpu() -> float:
    """CPU seconds of this process (every thread: the transport's too) and of its ended,
    waited-for children (the sender processes of `--workers`)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def stage_send(config: Path) -> dict[str, Any]:
    from digest.deliver import send_digests
    from digest.plan import plan_in_batches

    app = _app(config)
    app.engine()
    settings = app.config.digest
    start = time.perf_counter()
    plan_in_batches(app.sessions(), _due(app), now=NOW, settings=settings, at_send_time=False)
    planned = time.perf_counter()
    cpu = _cpu()
    workers = app.config.delivery.workers
    report = send_digests(
        app.sender(),
        _due(app),
        now=NOW,
        settings=settings,
        workers=app.send_workers(workers) if workers > 1 else None,
    )
    done = time.perf_counter()
    return {
        "plan_s": planned - start,
        "send_s": done - planned,
        "send_cpu_s": _cpu() - cpu,
        "sent": report.sent,
        "line": report.line(),
        "workers_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def stage_ceiling(config: Path, spool: Path) -> dict[str, Any]:
    """Build every sent delivery's message (untimed), then push them all with smtplib."""
    from sqlalchemy import select

    from digest.models import Delivery, DeliveryStatus

    app = _app(config)
    mailer = app.mailer()
    count = 0
    with app.sessions()() as session, spool.open("wb") as out:
        rows = session.scalars(
            select(Delivery).where(Delivery.status == DeliveryStatus.SENT).order_by(Delivery.id)
        )
        for delivery in rows:
            raw = mailer.delivery_message(session, delivery, NOW).as_bytes()
            to = delivery.subscriber.email.encode()
            out.write(struct.pack("!II", len(to), len(raw)) + to + raw)
            count += 1
            session.expunge(delivery)
    smtp = app.config.smtp
    per_connection = app.config.delivery.max_per_connection
    streams = max(1, app.config.delivery.workers)

    def push(stream: int) -> int:
        """Push every `streams`-th message, from the `stream`-th: one sender's share."""
        client: smtplib.SMTP | None = None
        connections = pushed = 0
        with spool.open("rb") as spooled:
            for n in range(count):
                to_length, raw_length = struct.unpack("!II", spooled.read(8))
                if n % streams != stream:
                    spooled.seek(to_length + raw_length, os.SEEK_CUR)
                    continue
                if pushed % per_connection == 0:
                    if client is not None:
                        client.quit()
                    client = smtplib.SMTP(smtp.host, smtp.port, timeout=60)
                    connections += 1
                to = spooled.read(to_length).decode()
                client.sendmail(FROM, [to], spooled.read(raw_length))
                pushed += 1
        if client is not None:
            client.quit()
        return connections

    # As many concurrent streams as sender processes, each over its own connections.
    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=streams) as pool:
        connections = sum(pool.map(push, range(streams)))
    return {
        "ceiling_s": time.perf_counter() - start,
        "ceiling_cpu_s": time.process_time() - cpu,
        "messages": count,
        "connections": connections,
    }


def run_stage(name: str, *extra: str) -> tuple[dict[str, Any], float]:
    """Run a stage in a child process: its JSON result and its peak RSS in MB."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--stage", name, *extra],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"stage {name} failed ({child.returncode}): {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


# --- the run ---------------------------------------------------------------------------


def write_config(folder: Path, url: str, port: int, workers: int) -> Path:
    config = folder / "config.toml"
    config.write_text(
        f"""
[database]
url = "{url}"
[smtp]
host = "127.0.0.1"
port = {port}
starttls = false
timeout = 60
[delivery]
transport = "smtp"
workers = {workers}
[site]
secret_key = "bench-secret-key-0123456789abcdef"
base_url = "https://digest.example.org"
[mail]
from_address = "{FROM}"
postal_address = "1 Rue Example, 75001 Paris"
""",
        encoding="utf-8",
    )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--papers", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=30, help="size of the topic pool")
    parser.add_argument("--naive", type=int, default=200, help="recipients in the naive run")
    parser.add_argument("--workers", type=int, default=1, help="sender processes")
    parser.add_argument("--url", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run, for CI")
    parser.add_argument(
        "--only",
        choices=["naive", "dry-run"],
        help="after ingest, run only this stage and print its figures",
    )
    parser.add_argument(
        "--profile",
        choices=["ingest", "dry-run", "naive", "send", "ceiling"],
        help="print a cProfile of this stage (to stderr)",
    )
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        return run_sink()
    if args.stage:
        stages = {
            "ingest": lambda: stage_ingest(
                args.config, args.data / "papers", args.data / "people.csv"
            ),
            "dry-run": lambda: stage_dry_run(args.config),
            "naive": lambda: stage_naive(args.config, args.naive),
            "send": lambda: stage_send(args.config),
            "ceiling": lambda: stage_ceiling(args.config, args.data / "spool.bin"),
        }
        if args.profile == args.stage:
            profile = cProfile.Profile()
            result = profile.runcall(stages[args.stage])
            stats = pstats.Stats(profile, stream=sys.stderr)
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(25)
        else:
            result = stages[args.stage]()
        print(json.dumps(result))
        return None
    if args.smoke:
        args.papers, args.subscribers, args.topics, args.naive = 60, 12, 6, 3
    from bench.synthetic import topic_pool, write_papers, write_subscribers

    with tempfile.TemporaryDirectory(prefix="digest-scale-") as folder:
        data = Path(folder)
        os.environ["DIGEST_DATA_DIR"] = str(data / "state")
        for key in ("DIGEST_CONFIG", "DIGEST_DATABASE_URL"):
            os.environ.pop(key, None)
        write_papers(data / "papers", args.papers, seed=1)
        write_subscribers(data / "people.csv", args.subscribers, topic_pool(args.topics), seed=1)
        url = args.url or f"sqlite:///{data / 'scale.sqlite3'}"
        sink = Sink.start()
        try:
            config = write_config(data, url, sink.port, args.workers)
            common = ["--config", str(config), "--data", str(data), "--naive", str(args.naive)]
            if args.profile:
                common += ["--profile", args.profile]
            ingest, _ = run_stage("ingest", *common)
            if args.only:
                print(
                    f"{url.split(':', 1)[0]}: {args.papers} papers, {ingest['subscribers']} "
                    f"subscribers, {args.topics} topics"
                )
            if args.only == "naive":
                naive, _ = run_stage("naive", *common)
                print(naive_line(naive))
                return
            dry, dry_rss = run_stage("dry-run", *common)
            if args.only == "dry-run":
                print(dry_line(dry))
                print(f"peak RSS:             {dry_rss:8.0f} MB dry run")
                return
            naive, _ = run_stage("naive", *common)
            sink_cpu = sink.cpu()
            send, send_rss = run_stage("send", *common)
            received = sink.received()
            send["sink_cpu_s"], sink_cpu = sink.cpu() - sink_cpu, sink.cpu()
            ceiling, _ = run_stage("ceiling", *common)
            ceiling["sink_cpu_s"] = sink.cpu() - sink_cpu
        finally:
            sink.stop()
        report(args, url, ingest, dry, dry_rss, naive, send, send_rss, ceiling, received)


def report(
    args: argparse.Namespace,
    url: str,
    ingest: dict[str, Any],
    dry: dict[str, Any],
    dry_rss: float,
    naive: dict[str, Any],
    send: dict[str, Any],
    send_rss: float,
    ceiling: dict[str, Any],
    received: int,
) -> None:
    backend = url.split(":", 1)[0]
    sent = send["sent"]
    end_to_end = send["plan_s"] + send["send_s"]
    e2e_rate = sent / end_to_end if end_to_end else 0.0
    ceiling_rate = ceiling["messages"] / ceiling["ceiling_s"] if ceiling["ceiling_s"] else 0.0
    print(
        f"{backend}: {args.papers} papers, {ingest['subscribers']} subscribers, "
        f"{args.topics} topics, {args.workers} worker(s)"
    )
    print("time per stage:")
    print(f"  ingest papers        {ingest['ingest_s']:8.2f} s")
    print(f"  import subscribers   {ingest['import_s']:8.2f} s")
    print(f"  dry run              {dry['dry_run_s']:8.2f} s  (select + render, nothing written)")
    print(f"  plan (select, store) {send['plan_s']:8.2f} s")
    print(f"  send loop            {send['send_s']:8.2f} s  ({send['line']})")
    print(f"  ceiling (smtplib)    {ceiling['ceiling_s']:8.2f} s")
    print(dry_line(dry))
    print(f"end to end:           {e2e_rate:8.0f} emails/s ({sent} sent, {received} at the sink)")
    print(
        f"transport ceiling:    {ceiling_rate:8.0f} emails/s "
        f"({ceiling['messages']} messages over {ceiling['connections']} connections)"
    )
    print(f"ratio to the ceiling: {e2e_rate / ceiling_rate if ceiling_rate else 0:8.2f}")
    per_message = 1000 / max(1, sent)
    print(
        f"CPU per message:      {send['send_cpu_s'] * per_message:8.2f} ms sender, "
        f"{send['sink_cpu_s'] * per_message:.2f} ms sink while sending; ceiling "
        f"{ceiling['ceiling_cpu_s'] * 1000 / max(1, ceiling['messages']):.2f} ms smtplib, "
        f"{ceiling['sink_cpu_s'] * 1000 / max(1, ceiling['messages']):.2f} ms sink "
        f"({os.cpu_count()} CPUs)"
    )
    workers = f", workers {send['workers_rss_mb']:.0f} MB" if args.workers > 1 else ""
    print(f"peak RSS:             {send_rss:8.0f} MB sending{workers}, {dry_rss:.0f} MB dry run")
    print(naive_line(naive))


def dry_line(dry: dict[str, Any]) -> str:
    """Digests per second of selection and rendering alone (the dry run)."""
    rate = (dry["digests"] + dry["empty"]) / dry["dry_run_s"] if dry["dry_run_s"] else 0.0
    return (
        f"selection+rendering:  {rate:8.0f} digests/s "
        f"({dry['digests']} digests, {dry['empty']} empty, {dry['dry_run_s']:.2f} s)"
    )


def naive_line(naive: dict[str, Any]) -> str:
    """The naive baseline against the product, per recipient."""
    per_naive = naive["naive_s"] / max(1, naive["naive_recipients"])
    per_product = naive["product_s"] / max(1, naive["naive_recipients"])
    return (
        f"naive baseline:       {per_naive * 1000:8.2f} ms per recipient to render, inline and "
        f"build ({naive['naive_recipients']} recipients); the product "
        f"{per_product * 1000:.2f} ms: {per_naive / per_product:.1f}x faster, after inlining "
        f"{naive['cards']} paper cards once per run in {naive['warm_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
