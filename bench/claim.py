"""Claiming the next delivery: its query plan and cost as the day's ledger grows.

Fills a ledger with N queued deliveries for one day and has one sender claim
and mark them sent one by one (two transactions per row, as `digest send`
does), with and without the partial index on claimable rows
(`ix_deliveries_claimable`, migration 0005). Prints the plan of the claim
(EXPLAIN) and the mean time of the claim statement (not its transaction) over
the first and the last tenth of the day: with the index both stay flat; without
it, each claim sorts or walks the rows already sent, so the last claims cost
more than the first.

Runs on a temporary SQLite file, or on PostgreSQL when given a server URL (it
creates and drops a scratch database there).

Run: .venv/bin/python bench/claim.py [--sizes 1000 10000] [--postgresql URL]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from scratch import scratch_database
from sqlalchemy import Engine, event, insert, text, update

from digest import db, ledger
from digest.models import Delivery, Digest, Subscriber

NOW = datetime(2026, 11, 25, 7, tzinfo=UTC)
DAY = date(2026, 11, 25)


def fill(engine: Engine, size: int) -> None:
    """N subscribers with one queued delivery each for DAY, all pointing at one digest."""
    factory = db.session_factory(engine)
    with db.transaction(factory) as session:
        session.execute(
            insert(Subscriber),
            [
                {
                    "email": f"r{n}@example.org",
                    "email_key": f"r{n}@example.org",
                    "status": "active",
                    "timezone": "UTC",
                    "send_hour": 7,
                    "secret": "s",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in range(size)
            ],
        )
        digest = Digest(digest_date=DAY, content_hash="x", created_at=NOW)
        session.add(digest)
        session.flush()
        session.execute(
            insert(Delivery),
            [
                {
                    "subscriber_id": n + 1,
                    "digest_date": DAY,
                    "digest_id": digest.id,
                    "status": "queued",
                    "selected_at": NOW,
                    "attempts": 0,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in range(size)
            ],
        )


def claim_plan(engine: Engine) -> list[str]:
    """The plan of the claim statement exactly as `db.claim_delivery` sends it."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    factory = db.session_factory(engine)
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with factory() as session, session.begin():
            ledger.claim(session, NOW, NOW + timedelta(minutes=5), [DAY])
            session.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = next(c for c in captured if "UPDATE deliveries" in c[0])
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return [str(row[3]) for row in rows]
        connection.exec_driver_sql("ANALYZE deliveries")
        rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
        return [str(row[0]) for row in rows]


def claim_some(engine: Engine, count: int) -> list[float]:
    """Claim and mark sent `count` queued rows; the seconds each claim statement took."""
    factory = db.session_factory(engine)
    timings: list[float] = []
    for _ in range(count):
        with db.transaction(factory) as session:
            start = time.perf_counter()
            claimed = ledger.claim(session, NOW, NOW + timedelta(minutes=5), [DAY])
            timings.append(time.perf_counter() - start)
        assert claimed is not None
        with db.transaction(factory) as session:
            session.execute(
                update(Delivery).where(Delivery.id == claimed).values(status="sent", sent_at=NOW)
            )
    return timings


def reset(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(update(Delivery).values(status="queued", sent_at=None))


def report(label: str, engine: Engine, size: int) -> None:
    """Send the day; the plan is taken when nine tenths are sent (PostgreSQL: analyzed)."""
    tenth = max(1, size // 10)
    timings = claim_some(engine, size - tenth)
    plan = claim_plan(engine)
    timings += claim_some(engine, tenth)
    first = sum(timings[:tenth]) / tenth * 1000
    last = sum(timings[-tenth:]) / tenth * 1000
    print(f"  {label}: first tenth {first:.2f} ms/claim, last tenth {last:.2f} ms/claim")
    print("    plan with nine tenths sent:")
    for line in plan:
        print(f"      {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--postgresql", metavar="URL", help="a PostgreSQL server database URL")
    args = parser.parse_args()
    for size in args.sizes:
        with scratch_database(args.postgresql) as url:
            engine = db.create_db_engine(url)
            db.upgrade(engine)
            fill(engine, size)
            print(f"{engine.dialect.name}, {size} deliveries on one day:")
            report("with ix_deliveries_claimable", engine, size)
            reset(engine)
            with engine.begin() as connection:
                connection.execute(text("DROP INDEX ix_deliveries_claimable"))
            engine.dispose()
            engine = db.create_db_engine(url)
            report("without it (schema 0004)", engine, size)
            engine.dispose()


if __name__ == "__main__":
    main()
