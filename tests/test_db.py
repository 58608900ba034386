"""The database layer: migrations, SQLite settings, refusing a stale schema."""

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from digest import db
from digest.ingest import ingest_inputs
from digest.models import Paper
from digest.query import parse_query
from tests.conftest import SEEDS


def test_migrations_apply_to_an_empty_database(empty_db_url: str) -> None:
    engine = db.create_db_engine(empty_db_url)
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"papers", "paper_sources", "upvote_observations"} <= tables
    full_text = "papers_fts" in tables
    columns = {column["name"] for column in inspect(engine).get_columns("papers")}
    assert (full_text, "search_vector" in columns) == (
        (True, False) if engine.dialect.name == "sqlite" else (False, True)
    )
    db.upgrade(engine)  # a second upgrade is a no-op
    engine.dispose()


@pytest.mark.sqlite
def test_embedded_sqlite_migrates_itself_with_wal_foreign_keys_and_busy_timeout(
    db_url: str,
) -> None:
    engine = db.open_database(db_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()


def test_an_out_of_date_server_schema_is_refused(empty_db_url: str) -> None:
    engine = db.create_db_engine(empty_db_url)
    with pytest.raises(db.SchemaOutOfDate, match=r"run `digest db upgrade`"):
        db.require_current_schema(engine)
    db.upgrade(engine)
    db.require_current_schema(engine)
    engine.dispose()


def test_upgrading_an_older_schema_keeps_the_papers(empty_db_url: str) -> None:
    engine = db.create_db_engine(empty_db_url)
    db.upgrade(engine, "0001")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    factory = db.session_factory(engine)
    ingest_inputs(factory, [str(SEEDS / "000_5ed1fa5957327774.txt")], now=now, max_bytes=10**7)
    with pytest.raises(db.SchemaOutOfDate, match="schema is at 0001"):
        db.require_current_schema(engine)
    if engine.dialect.name == "postgresql":
        db.upgrade(engine)  # a server database is upgraded by `digest db upgrade`
    engine.dispose()
    upgraded = db.open_database(empty_db_url)
    with upgraded.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM papers")).scalar() == 34
        assert connection.execute(text("SELECT count(*) FROM subscribers")).scalar() == 0
    with db.session_factory(upgraded)() as session:
        seen = session.scalars(select(Paper.first_seen_at).distinct()).all()
        assert seen == [now]  # the stored UTC instants survive the timestamptz conversion
        found = db.matching_papers(session, parse_query("world model"))
        assert len(found) == 8  # the full-text index covers papers stored before it existed
    upgraded.dispose()


@pytest.mark.sqlite
def test_the_sqlite_file_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    """It holds every subscriber's address and secret: 0600, in a 0700 folder."""
    path = tmp_path / "new" / "digest.sqlite3"
    engine = db.open_database(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO leases (name, holder, expires_at) VALUES ('x', 'y', '2026-01-01')")
        )
        modes = {
            suffix: (path.parent / f"digest.sqlite3{suffix}").stat().st_mode & 0o777
            for suffix in ("", "-wal", "-shm")
        }
    engine.dispose()
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    assert path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.sqlite
def test_integrity_checks_find_damage(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    engine = db.open_database(f"sqlite:///{path}")
    factory = db.session_factory(engine)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ingest_inputs(factory, [str(SEEDS / "000_5ed1fa5957327774.txt")], now=now, max_bytes=10**7)
    assert db.integrity_problems(engine) == []
    assert db.integrity_problems(engine, full=True) == []
    engine.dispose()
    pages = path.stat().st_size // 4096
    with path.open("r+b") as handle:  # the last page: papers' rows or the full-text index
        handle.seek(4096 * (pages - 1))
        handle.write(random.Random(1).randbytes(4096))
    engine = db.create_db_engine(f"sqlite:///{path}")
    problems = db.integrity_problems(engine, full=True)
    engine.dispose()
    assert problems and all("\n" not in problem for problem in problems)
    assert not any(problem.startswith("*** ") for problem in problems)
