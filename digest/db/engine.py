"""Engines, sessions, migrations, and the bulk statements the stores share.

`open_database(url)` returns an engine on an up-to-date schema: the embedded
SQLite default migrates itself, a server database that is behind raises
`SchemaOutOfDate` telling the operator to run `digest db upgrade`. SQLite's
pragmas (WAL, foreign keys, busy timeout), its IMMEDIATE writers and its integrity
checks are set up here; `transaction` is every caller's unit of work. The bulk
helpers (`insert_rows`, `update_rows`) render one statement per batch and run it on
the driver (or COPY on PostgreSQL), `insert_new` inserts what no unique constraint
refuses; `chunked`, `table_named`, `param_marker` and `UNSET` are
shared by the other modules of `digest.db` only (the package does not export them).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DatabaseError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from digest.errors import DigestError
from digest.models import Paper
from digest.resources import resource_dir

SQLITE_BUSY_TIMEOUT_MS = 10_000


class SchemaOutOfDate(DigestError):
    """The database schema is behind the code and must be upgraded first."""


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # SQLAlchemy, not the driver, starts transactions (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _postgresql_session(dbapi_connection: Any, _record: Any) -> None:
    # Timestamps are timestamptz and come back in UTC; raw SQL and casts see UTC too.
    dbapi_connection.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _sqlite_begin(connection: Connection) -> None:
    # A writer that begins IMMEDIATE takes the write lock up front, so two processes
    # never deadlock upgrading read locks (SQLite would fail one of them at once).
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def engine_url(url: str) -> URL:
    """`url` with its driver: a plain `postgresql://` URL means psycopg 3, not psycopg2."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 (and its folder 0700) before SQLite would, with 0644.

    It holds every subscriber's address and secret; SQLite gives the -wal and
    -shm files the mode of the database file.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _multirow_inserts(engine: Engine) -> None:
    """Make a bulk INSERT (executemany) multi-row statements of up to 1000 rows each.

    FTS5 flushes its pending terms at every statement its trigger runs in, so one
    statement per row made indexing a fresh load six times slower on SQLite; on
    PostgreSQL it saves a round trip and an executor start per row.
    """
    engine.dialect.use_insertmanyvalues_wo_returning = True


def create_db_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite it creates the file privately, sets WAL, FKs, timeouts."""
    parsed = engine_url(url)
    if parsed.get_backend_name() == "sqlite":
        uri = parsed.query.get("uri") in ("true", "1")
        if parsed.database and parsed.database != ":memory:" and not uri:
            _create_private(Path(parsed.database).expanduser())
        engine = create_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, future=True
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        _multirow_inserts(engine)
        return engine
    engine = create_engine(parsed, pool_pre_ping=True, future=True)
    _multirow_inserts(engine)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgresql_session)
    return engine


def _alembic_config(connection: Connection) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(resource_dir("migrations")))
    config.attributes["connection"] = connection
    return config


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """What Alembic's autogenerate compares: not the full-text indexes (SQLite's FTS5 and
    fts5vocab tables, PostgreSQL's search_vector), which migrations create in raw SQL."""
    if type_ == "table" and name is not None and name.startswith(("papers_fts", "papers_vocab")):
        return False
    return name not in {"search_vector", "ix_papers_search_vector"}


def head_revision() -> str:
    script = ScriptDirectory(str(resource_dir("migrations")))
    head = script.get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the Alembic migrations up to `revision`."""
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), revision)


def require_current_schema(engine: Engine) -> None:
    """Raise SchemaOutOfDate unless the schema is at the head revision."""
    current = current_revision(engine)
    if current != head_revision():
        raise SchemaOutOfDate(
            f"database schema is at {current or 'empty'}, this version needs "
            f"{head_revision()}: run `digest db upgrade`"
        )


def open_database(url: str) -> Engine:
    """Open the database, migrating the embedded SQLite default, refusing a stale server DB."""
    engine = create_db_engine(url)
    if engine.dialect.name == "sqlite" and current_revision(engine) != head_revision():
        upgrade(engine)
    try:
        require_current_schema(engine)
    except SchemaOutOfDate:
        engine.dispose()
        raise
    return engine


def integrity_problems(engine: Engine, *, full: bool = False, limit: int = 20) -> list[str]:
    """What SQLite finds damaged in the database file; [] when it is sound.

    `PRAGMA quick_check` by default (`digest db status`); `full` runs
    `integrity_check`, the foreign-key check and the full-text index's own check
    (`digest db check`). Server databases check themselves: [] there.
    """
    if engine.dialect.name != "sqlite":
        return []
    pragma = "integrity_check" if full else "quick_check"
    with engine.connect() as connection:
        try:
            rows = connection.exec_driver_sql(f"PRAGMA {pragma}({limit})").scalars().all()
        except DatabaseError as exc:
            if not full:
                raise
            return [error_detail(exc)]
        lines = [line for row in rows for line in str(row).splitlines()]
        problems = [line for line in lines if line != "ok" and not line.startswith("*** ")]
        if full:
            problems += _deep_checks(connection)
    return problems


def _deep_checks(connection: Connection) -> list[str]:
    """Foreign keys and the full-text index's own check (after integrity_check)."""
    problems: list[str] = []
    try:
        problems += [
            f"foreign key: {row[0]} row {row[1]} points to a missing {row[2]} row"
            for row in connection.exec_driver_sql("PRAGMA foreign_key_check")
        ]
        fts = connection.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'papers_fts'")
        if fts.first():
            connection.exec_driver_sql(
                "INSERT INTO papers_fts(papers_fts) VALUES ('integrity-check')"
            )
    except DatabaseError as exc:
        problems.append(error_detail(exc))
    finally:
        connection.rollback()
    return problems


def error_detail(exc: BaseException) -> str:
    """The driver's message of a database error on one line, without SQL or parameters."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session], *, write: bool = True) -> Iterator[Session]:
    """A session whose work commits on success and rolls back entirely on any error.

    On SQLite a writing transaction takes the write lock when it begins.
    """
    with factory() as session, session.begin():
        if write:
            session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        yield session


# --- bulk reads and writes shared by the stores ------------------------------------


# Ingest reads and writes papers a batch at a time (digest.merge): a few statements per
# batch of records instead of several per record. IN lists are cut to CHUNK values.
CHUNK = 500


def chunked(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """`values` in slices of at most CHUNK (an IN list each)."""
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def table_named(name: str) -> Any:
    """The Core table of that name, for statements that need no ORM entities."""
    return Paper.metadata.tables[name]


def _driver_values(
    dialect: Any, table: Any, names: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> list[list[Any]]:
    """The rows' values of these columns, as the driver takes them: each column's bind
    processor runs on the values in turn, once per run of the same value (a batch's
    timestamps are all `now`). SQLAlchemy's executemany builds and converts the
    parameters of each row in Python, a third of writing a fresh load."""
    values = [[row[name] for name in names] for row in rows]
    for index, name in enumerate(names):
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            continue
        last: tuple[object, object] = (UNSET, None)
        for row in values:
            if row[index] is not last[0]:
                last = (row[index], process(row[index]))
            row[index] = last[1]
    return values


def param_marker(dialect: Any) -> str:
    """The driver's placeholder for one parameter (qmark for sqlite3, %s for psycopg)."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


def insert_rows(session: Session, table: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows in bulk (the same columns in every row), run on the driver
    (`_driver_values`): multi-row INSERTs of up to 1000 rows rendered once, or on
    PostgreSQL a COPY (psycopg parses a long INSERT's placeholders in Python each time:
    36k rows of 10 columns took 2.1 s that way, 0.2 s by COPY)."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    values = _driver_values(dialect, table, names, rows)
    quote = dialect.identifier_preparer.quote
    into = f"{dialect.identifier_preparer.format_table(table)} ({', '.join(map(quote, names))})"
    if dialect.name == "postgresql":
        driver = connection.connection.driver_connection  # in this transaction
        assert driver is not None
        sql = f"COPY {into} FROM STDIN"
        try:
            with driver.cursor() as cursor, cursor.copy(sql) as copy:
                for row in values:
                    copy.write_row(row)
        except dialect.loaded_dbapi.Error as exc:  # raised as SQLAlchemy raises the rest
            # (a connection lost here is invalidated at the rollback that follows)
            base = dialect.loaded_dbapi.Error
            raise DBAPIError.instance(sql, None, exc, base, dialect=dialect) from exc
        return
    head = f"INSERT INTO {into} VALUES "
    one = "(" + ", ".join([param_marker(dialect)] * len(names)) + ")"
    size = max(1, min(1000, dialect.insertmanyvalues_max_parameters // len(names)))
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        sql = head + ", ".join([one] * len(chunk))
        connection.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(chunk)))


UNSET = object()  # stands for "no value yet", which None cannot (None is a value)


def update_rows(
    session: Session, table: Any, keys: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Update rows in bulk, found by their `keys` columns: one statement per set of columns,
    rendered once and run on the driver for every row (`_driver_values`)."""
    by_columns: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        by_columns.setdefault(tuple(name for name in row if name not in keys), []).append(row)
    connection = session.connection()
    dialect = connection.dialect
    quote, mark = dialect.identifier_preparer.quote, param_marker(dialect)
    for columns, group in by_columns.items():
        if not columns:
            continue
        sql = (
            f"UPDATE {dialect.identifier_preparer.format_table(table)} SET "
            + ", ".join(f"{quote(name)} = {mark}" for name in columns)
            + " WHERE "
            + " AND ".join(f"{quote(key)} = {mark}" for key in keys)
        )
        values = _driver_values(dialect, table, (*columns, *keys), group)
        connection.exec_driver_sql(sql, [tuple(row) for row in values])


def insert_new(
    session: Session, table: Any, rows: Sequence[Mapping[str, Any]], returning: Sequence[Any]
) -> list[Any]:
    """Insert `rows` in bulk, skipping those a unique constraint refuses (a row another
    process stored first); the `returning` columns of the rows inserted.

    `INSERT ... ON CONFLICT DO NOTHING` on both backends, rather than a savepoint per
    row (PostgreSQL slows down past 64 subtransactions in one transaction).
    """
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        statement: Any = postgresql_insert(table).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(table).on_conflict_do_nothing()
    result = session.connection().execute(statement.returning(*returning), list(rows))
    return list(result.all())
