"""The database layer: migrations, SQLite settings, refusing a stale schema."""

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, inspect, select, text

from digest import db, query_plan
from digest.ingest import ingest_inputs
from digest.models import Paper, Subscriber, Topic, UTCDateTime
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


def test_upgrading_an_older_schema_keeps_the_papers_and_reindexes_them(
    empty_db_url: str,
) -> None:
    from digest import relevance

    engine = db.create_db_engine(empty_db_url)
    db.upgrade(engine, "0004")
    insert = text(
        "INSERT INTO papers (key, title_key, title, abstract, authors, categories, "
        "first_seen_at, updated_at) VALUES (:key, :key, :title, :abstract, '', '', "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    with engine.begin() as connection:
        for key, title, abstract in [
            ("a", "Sparse Experts", "We scale a Mixture-of-Experts (MoE) language model."),
            ("b", "CoDE: Deepfake Detection", "Contrastive Deepfake Embeddings (CoDE) spot fakes."),
            ("c", "Code Generation Models", "Models that write code."),
        ]:
            connection.execute(insert, {"key": key, "title": title, "abstract": abstract})
    with pytest.raises(db.SchemaOutOfDate, match="schema is at 0004"):
        db.require_current_schema(engine)
    if engine.dialect.name == "postgresql":
        db.upgrade(engine)  # a server database is upgraded by `digest db upgrade`
    engine.dispose()
    upgraded = db.open_database(empty_db_url)
    with upgraded.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM papers")).scalar() == 3
        assert connection.execute(
            text("SELECT title_terms, abstract_terms FROM papers WHERE key = 'b'")
        ).one() == ("qqcode deepfak detect", "contrast deepfak embed qqcode spot fake")
        acronyms = connection.execute(
            text("SELECT acronym, expansion FROM acronyms ORDER BY acronym")
        ).all()
        assert acronyms == [
            ("CoDE", "contrastive deepfake embeddings"),
            ("MoE", "mixture of experts"),
        ]
    with db.session_factory(upgraded)() as session:
        # The stored UTC instants survive the timestamptz conversion on PostgreSQL.
        seen = session.scalars(select(Paper.first_seen_at).distinct()).all()
        assert seen == [datetime(2026, 1, 1, tzinfo=UTC)]
        corpus = relevance.Corpus(session)

        def titles(query: str) -> list[str]:
            plan = query_plan.plan_query(session, parse_query(query), corpus)
            found = relevance.rank(session, plan, corpus)
            papers = db.papers_by_id(session, [m.paper_id for m in found])
            return [papers[m.paper_id].title for m in found]

        # The rebuilt index: code is not CoDE, and the mined MoE expands both ways.
        assert titles("code") == ["Code Generation Models"]
        assert titles("CoDE") == ["CoDE: Deepfake Detection"]
        assert titles("mixture of experts") == ["Sparse Experts"]
        assert titles("moe") == ["Sparse Experts"]
    upgraded.dispose()


@pytest.mark.sqlite
def test_downgrading_the_relevance_revision_restores_the_old_index(tmp_path: Path) -> None:
    engine = db.open_database(f"sqlite:///{tmp_path / 'down.sqlite3'}")
    with engine.begin() as connection:
        command_config = db._alembic_config(connection)
        from alembic import command

        command.downgrade(command_config, "0004")
    with engine.begin() as connection:
        columns = {row[1] for row in connection.execute(text("PRAGMA table_info(papers)"))}
        assert "title_terms" not in columns
        fts = connection.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'papers_fts'")
        ).scalar()
        assert "porter" in fts
    engine.dispose()


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


def test_the_pgscale_revision_downgrades_and_upgrades_again(engine) -> None:
    """0006 undone: no claim or observed_at index, and on PostgreSQL naive timestamps
    and no search_vector; redone: all back, the stored instants unchanged."""
    from alembic import command

    seen = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO leases (name, holder, expires_at) VALUES ('x', 'y', :at)").bindparams(
                bindparam("at", type_=UTCDateTime)
            ),
            {"at": seen},
        )

    def shape() -> tuple[set[str], set[str], bool]:
        listing = {
            "sqlite": "SELECT name FROM sqlite_master WHERE type = 'index'",
            "postgresql": "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'",
        }[engine.dialect.name]
        with engine.connect() as connection:
            indexes = set(connection.execute(text(listing)).scalars())
        columns = {c["name"] for c in inspect(engine).get_columns("papers")}
        lease = {c["name"]: c for c in inspect(engine).get_columns("leases")}["expires_at"]
        return indexes, columns, bool(getattr(lease["type"], "timezone", False))

    with engine.begin() as connection:
        command.downgrade(db._alembic_config(connection), "0005_relevance")
    indexes, columns, lease_aware = shape()
    assert "ix_upvote_observations_observed_at" not in indexes
    assert "ix_deliveries_claimable" not in indexes
    assert "search_vector" not in columns
    postgresql = engine.dialect.name == "postgresql"
    assert not lease_aware
    db.upgrade(engine)
    indexes, columns, lease_aware = shape()
    assert {"ix_upvote_observations_observed_at", "ix_deliveries_claimable"} <= indexes
    assert ("search_vector" in columns) == postgresql
    assert lease_aware == postgresql
    with db.session_factory(engine)() as session:
        assert db.current_lease(session, "x").expires_at == seen  # type: ignore[union-attr]


def test_long_title_keys_stored_before_they_were_bounded_are_bounded(
    empty_db_url: str, tmp_path: Path
) -> None:
    """0008: a key over 480 characters, as SQLite stored one before ingest bounded them,
    becomes the bounded key, so the paper's next record updates it instead of adding it
    again; an arXiv-keyed paper's title key too; a bounded key already taken stays."""
    import json

    from digest.sources.records import normalize_title

    def title(tail: str) -> str:
        return "A" + " word" * 99 + f" {tail}"  # a 500-character title key

    engine = db.create_db_engine(empty_db_url)
    db.upgrade(engine, "0007_ingestfast")
    insert = text(
        "INSERT INTO papers (key, title_key, title, abstract, authors, categories, "
        "first_seen_at, updated_at) VALUES (:key, :title_key, :title, '', '', '', "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    long, bounded = title("three").lower(), normalize_title(title("three"))
    rows = [
        ("title:" + title("one").lower(), title("one").lower()),
        ("2601.00001", title("two").lower()),
        ("title:" + long, long),
        ("title:" + bounded, bounded),  # its record came again after ingest bounded keys
    ]
    with engine.begin() as connection:
        for key, title_key in rows:
            connection.execute(insert, {"key": key, "title_key": title_key, "title": key})
    db.upgrade(engine)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT key, title_key FROM papers ORDER BY id")).all()
    assert stored == [
        ("title:" + normalize_title(title("one")), normalize_title(title("one"))),
        ("2601.00001", normalize_title(title("two"))),
        rows[2],
        rows[3],
    ]
    assert len(stored[0][0]) == 486
    feed = tmp_path / "again.json"
    feed.write_text(json.dumps([{"title": title("one")}, {"title": title("two")}]))
    (summary,) = ingest_inputs(
        db.session_factory(engine),
        [str(feed)],
        now=datetime(2026, 11, 27, tzinfo=UTC),
        max_bytes=1_000_000,
    )
    assert (summary.new, summary.error) == (0, None)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM papers")).scalar() == 4
    engine.dispose()


def test_topics_stored_before_0010_were_added_when_their_subscriber_was(
    empty_db_url: str,
) -> None:
    """0010: each topic gets its subscriber's `created_at` as `added_at`, so the upgrade
    makes no topic look new; undone, the column goes and the topics stay."""
    from alembic import command

    engine = db.create_db_engine(empty_db_url)
    db.upgrade(engine, "0009_subsafe")
    created = [datetime(2026, 1, 5, 7, 30, tzinfo=UTC), datetime(2026, 6, 1, 23, 0, tzinfo=UTC)]
    at = bindparam("at", type_=UTCDateTime)
    with engine.begin() as connection:
        for number, when in enumerate(created, 1):
            connection.execute(
                text(
                    "INSERT INTO subscribers (id, email, email_key, status, timezone, "
                    "send_hour, secret, created_at, updated_at) VALUES (:id, :email, :email, "
                    "'active', 'UTC', 7, 's', :at, :at)"
                ).bindparams(at),
                {"id": number, "email": f"s{number}@example.org", "at": when},
            )
        for number, (subscriber, query) in enumerate([(1, "robot"), (1, "*"), (2, "robot")]):
            connection.execute(
                text(
                    "INSERT INTO topics (subscriber_id, position, query) "
                    "VALUES (:subscriber, :position, :query)"
                ),
                {"subscriber": subscriber, "position": number, "query": query},
            )
    db.upgrade(engine)
    with db.session_factory(engine)() as session:
        stored = session.execute(
            select(Topic.subscriber_id, Topic.query, Topic.added_at).order_by(Topic.id)
        ).all()
    assert stored == [(1, "robot", created[0]), (1, "*", created[0]), (2, "robot", created[1])]
    assert not {c["name"]: c for c in inspect(engine).get_columns("topics")}["added_at"]["nullable"]
    with engine.begin() as connection:
        command.downgrade(db._alembic_config(connection), "0009_subsafe")
    assert "added_at" not in {c["name"] for c in inspect(engine).get_columns("topics")}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM topics")).scalar() == 3
    engine.dispose()


def test_0011_adds_unanswered_since_and_its_downgrade_keeps_every_child_row(
    empty_db_url: str,
) -> None:
    """0011: existing subscribers read as having no unanswered email (NULL); undone, the
    column goes and the subscribers' topics and subscription requests stay (a batch
    copy of `subscribers` would have dropped them by ON DELETE CASCADE)."""
    from alembic import command

    engine = db.create_db_engine(empty_db_url)
    db.upgrade(engine, "0010_lookback")
    at = bindparam("at", type_=UTCDateTime)
    when = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (id, email, email_key, status, timezone, send_hour, "
                "secret, created_at, updated_at) VALUES (1, 'a@example.org', 'a@example.org', "
                "'pending', 'UTC', 7, 's', :at, :at)"
            ).bindparams(at),
            {"at": when},
        )
        connection.execute(
            text(
                "INSERT INTO topics (subscriber_id, position, query, added_at) "
                "VALUES (1, 0, 'robot', :at)"
            ).bindparams(at),
            {"at": when},
        )
        connection.execute(
            text(
                "INSERT INTO subscription_requests (subscriber_id, preferences, created_at) "
                "VALUES (1, '{}', :at)"
            ).bindparams(at),
            {"at": when},
        )
    db.upgrade(engine)
    with db.session_factory(engine)() as session:
        assert session.execute(select(Subscriber.id, Subscriber.unanswered_since)).all() == [
            (1, None)
        ]
        session.get_one(Subscriber, 1).unanswered_since = when
        session.commit()
    with engine.begin() as connection:
        command.downgrade(db._alembic_config(connection), "0010_lookback")
    assert "unanswered_since" not in {c["name"] for c in inspect(engine).get_columns("subscribers")}
    with engine.connect() as connection:
        counts = [
            connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
            for table in ("subscribers", "topics", "subscription_requests")
        ]
    assert counts == [1, 1, 1]
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()
