"""The one place that talks to the database: engines, sessions, migrations, queries.

`open_database(url)` returns an engine on an up-to-date schema: the embedded
SQLite default migrates itself, a server database that is behind raises
`SchemaOutOfDate` telling the operator to run `digest db upgrade`.
Backend-specific SQL (SQLite FTS5, PostgreSQL tsvector, row claims) lives here
and nowhere else.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from digest.errors import DigestError
from digest.fulltext import (
    BM25_WEIGHTS,
    PG_RANK_WEIGHTS,
    PG_TS_CONFIG,
    fts5_expression,
    tsquery_expression,
)
from digest.models import (
    RECEIVED_STATUSES,
    Acronym,
    Delivery,
    DeliveryStatus,
    DigestItem,
    JobRun,
    Lease,
    Paper,
    PaperSource,
    Subscriber,
    Topic,
    UpvoteObservation,
    UTCDateTime,
)
from digest.resources import resource_dir
from digest.text import Phrase

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


# --- papers -----------------------------------------------------------------


# Ingest reads and writes papers a batch at a time (digest.ingest): a few statements per
# batch of records instead of several per record. IN lists are cut to CHUNK values.
CHUNK = 500


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _table(name: str) -> Any:
    return Paper.metadata.tables[name]


class StoredPaper(NamedTuple):
    """What ingest needs to know of a stored paper a batch of records may belong to."""

    id: int
    arxiv_id: str | None
    title_key: str
    sources: dict[str, str | None]  # source -> hash of the record it last gave
    latest: tuple[datetime, int] | None  # the latest upvote observation (time, count)


# Each paper with its sources and its latest upvote observation, in one statement (an
# index probe each): `{column}` is arxiv_id or title_key, `{values}` the placeholders.
_STORED_PAPERS = (
    "SELECT p.id, p.arxiv_id, p.title_key, s.source, s.content_hash, o.observed_at, o.upvotes "
    "FROM papers p LEFT JOIN paper_sources s ON s.paper_id = p.id {latest} "
    "WHERE p.{column} IN ({values})"
)
_LATEST_ORDER = "ORDER BY l.observed_at DESC, l.id DESC LIMIT 1"
_LATEST = {
    # SQLite has no LATERAL; PostgreSQL would not use the primary key for `o.id = (...)`.
    "sqlite": "LEFT JOIN upvote_observations o ON o.id = (SELECT l.id "
    f"FROM upvote_observations l WHERE l.paper_id = p.id {_LATEST_ORDER})",
    "postgresql": "LEFT JOIN LATERAL (SELECT l.observed_at, l.upvotes "
    f"FROM upvote_observations l WHERE l.paper_id = p.id {_LATEST_ORDER}) o ON true",
}


def stored_papers(session: Session, column: str, values: Iterable[str]) -> dict[int, StoredPaper]:
    """The stored papers whose `column` (arxiv_id or title_key) is one of `values`, by id,
    each with its sources and latest upvote observation: one statement per CHUNK values."""
    assert column in ("arxiv_id", "title_key")
    connection = session.connection()
    dialect = connection.dialect
    observed_at = _table("upvote_observations").c.observed_at.type
    to_time = observed_at.dialect_impl(dialect).result_processor(dialect, None)
    placeholder = _placeholder(dialect)
    found: dict[int, StoredPaper] = {}
    last: tuple[object, Any] = (_UNSET, None)  # observations of one ingest share a time
    for chunk in _chunks(sorted(set(values))):
        sql = _STORED_PAPERS.format(
            latest=_LATEST[dialect.name],
            column=column,
            values=", ".join([placeholder] * len(chunk)),
        )
        rows = connection.exec_driver_sql(sql, tuple(chunk)).fetchall()
        for paper_id, arxiv_id, title_key, source, content_hash, time, upvotes in rows:
            paper = found.get(paper_id)
            if paper is None:
                latest = None
                if time is not None:
                    if time != last[0]:
                        last = (time, to_time(time) if to_time else time)
                    latest = (last[1], upvotes)
                paper = found[paper_id] = StoredPaper(paper_id, arxiv_id, title_key, {}, latest)
            if source is not None:
                paper.sources[source] = content_hash
    return found


def paper_rows(session: Session, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Every column of these papers, by id."""
    papers = _table("papers")
    found: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(ids))):
        for row in session.execute(select(papers).where(papers.c.id.in_(chunk))).mappings():
            found[row["id"]] = dict(row)
    return found


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
        last: tuple[object, object] = (_UNSET, None)
        for row in values:
            if row[index] is not last[0]:
                last = (row[index], process(row[index]))
            row[index] = last[1]
    return values


def _placeholder(dialect: Any) -> str:
    return "?" if dialect.paramstyle == "qmark" else "%s"


def insert_rows(session: Session, table: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows in bulk (the same columns in every row): multi-row INSERTs of up to 1000
    rows, rendered once and run on the driver (`_driver_values`)."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    values = _driver_values(dialect, table, names, rows)
    quote = dialect.identifier_preparer.quote
    head = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "
        f"({', '.join(map(quote, names))}) VALUES "
    )
    one = "(" + ", ".join([_placeholder(dialect)] * len(names)) + ")"
    size = max(1, min(1000, dialect.insertmanyvalues_max_parameters // len(names)))
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        sql = head + ", ".join([one] * len(chunk))
        connection.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(chunk)))


_UNSET = object()


def insert_papers(session: Session, rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Insert papers in bulk (column values, the same columns in every row); id by key."""
    if not rows:
        return {}
    papers = _table("papers")
    # Multi-row INSERTs, then the ids by key: an ordered RETURNING would make SQLite
    # insert one row per statement.
    insert_rows(session, papers, rows)
    ids: dict[str, int] = {}
    for chunk in _chunks([row["key"] for row in rows]):
        statement = select(papers.c.key, papers.c.id).where(papers.c.key.in_(chunk))
        ids.update((key, paper_id) for key, paper_id in session.execute(statement))
    return ids


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
    quote, mark = dialect.identifier_preparer.quote, _placeholder(dialect)
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


def update_papers(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Update papers in bulk: each row holds an `id` and the columns that changed.

    Rows that leave the analysed terms alone do not touch the full-text index: the
    SQLite trigger fires only on an update of a terms column, so those are grouped apart.
    """
    update_rows(session, _table("papers"), ("id",), rows)


def store_paper_links(
    session: Session,
    sources: Sequence[Mapping[str, Any]],
    source_hashes: Sequence[Mapping[str, Any]],
    observations: Sequence[Mapping[str, Any]],
) -> None:
    """Insert new paper sources and upvote observations, update changed source hashes."""
    insert_rows(session, _table("paper_sources"), sources)
    update_rows(session, _table("paper_sources"), ("paper_id", "source"), source_hashes)
    insert_rows(session, _table("upvote_observations"), observations)


def replace_acronyms(
    session: Session, paper_ids: Sequence[int], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Set the mined acronym definitions of these papers (`rows`), replacing theirs."""
    acronyms = _table("acronyms")
    for chunk in _chunks(sorted(set(paper_ids))):
        session.execute(delete(acronyms).where(acronyms.c.paper_id.in_(chunk)))
    insert_rows(session, acronyms, rows)


def list_papers(session: Session, limit: int = 20) -> Sequence[Paper]:
    """Papers, the most recently published first."""
    return session.scalars(
        select(Paper)
        .order_by(Paper.published_on.desc().nulls_last(), Paper.first_seen_at.desc())
        .limit(limit)
    ).all()


# --- full-text matching (the expressions are compiled by digest.fulltext) ---------------

_PG_QUERY = f"to_tsquery('{PG_TS_CONFIG}', :match)"


@dataclass(frozen=True)
class Window:
    """Papers eligible for a digest run: first seen since `new_since`, or with an upvote
    observation since `observed_since`, both up to `until`."""

    new_since: datetime
    observed_since: datetime
    until: datetime


_CANDIDATES = (
    "SELECT id FROM papers WHERE first_seen_at > :new_since AND first_seen_at <= :until "
    "UNION SELECT paper_id FROM upvote_observations "
    "WHERE observed_at > :observed_since AND observed_at <= :until"
)


def _window_statement(sql: str, window: Window | None) -> tuple[Any, dict[str, object]]:
    statement = text(sql)
    if window is None:
        return statement, {}
    statement = statement.bindparams(
        bindparam("new_since", type_=UTCDateTime),
        bindparam("observed_since", type_=UTCDateTime),
        bindparam("until", type_=UTCDateTime),
    )
    return statement, {
        "new_since": window.new_since,
        "observed_since": window.observed_since,
        "until": window.until,
    }


def match_candidates(
    session: Session,
    groups: Sequence[Sequence[Phrase]],
    excluded: Sequence[Phrase] = (),
    *,
    window: Window | None = None,
    limit: int | None = None,
) -> list[int]:
    """Ids of the papers with every group and none of `excluded`, through the index.

    With a `window`, only the papers eligible for that run; the window is applied
    outside the MATCH (`+rowid`), so it never turns into one index lookup per paper.
    With a `limit`, the best that many by the index's own bm25.
    """
    if session.get_bind().dialect.name == "postgresql":
        sql = f"SELECT id FROM papers WHERE search_vector @@ {_PG_QUERY}"
        sql += f" AND id IN ({_CANDIDATES})" if window else ""
        if limit is not None:
            rank = f"ts_rank_cd('{PG_RANK_WEIGHTS}', search_vector, {_PG_QUERY})"
            sql += f" ORDER BY {rank} DESC, id DESC LIMIT :limit"
        match = tsquery_expression(groups, excluded)
    else:
        sql = "SELECT rowid FROM papers_fts WHERE papers_fts MATCH :match"
        sql += f" AND +rowid IN ({_CANDIDATES})" if window else ""
        if limit is not None:
            sql += f" ORDER BY bm25(papers_fts, {BM25_WEIGHTS}), rowid DESC LIMIT :limit"
        match = fts5_expression(groups, excluded)
    statement, params = _window_statement(sql, window)
    params |= {"match": match, "limit": limit}
    return [row[0] for row in session.execute(statement, params)]


def window_papers(session: Session, window: Window | None = None) -> list[int]:
    """Ids of every paper eligible in `window` (all papers without one): the `*` topic."""
    sql = "SELECT id FROM papers" + (f" WHERE id IN ({_CANDIDATES})" if window else "")
    statement, params = _window_statement(sql + " ORDER BY id", window)
    return [row[0] for row in session.execute(statement, params)]


@dataclass(frozen=True)
class IndexedPaper:
    """A paper's analysed fields, as lists of index terms, and its title and abstract as
    written (their words are the terms' words, one for one: `text.words`)."""

    title: list[str]
    abstract: list[str]
    other: list[str]  # authors and categories
    title_text: str = ""
    abstract_text: str = ""


def indexed_papers(session: Session, ids: Iterable[int]) -> dict[int, IndexedPaper]:
    wanted = list(set(ids))
    found: dict[int, IndexedPaper] = {}
    columns = (
        Paper.id,
        Paper.title_terms,
        Paper.abstract_terms,
        Paper.author_terms,
        Paper.category_terms,
        Paper.title,
        Paper.abstract,
    )
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for (
            paper_id,
            title,
            abstract,
            authors,
            categories,
            title_text,
            abstract_text,
        ) in session.execute(select(*columns).where(Paper.id.in_(chunk))):
            found[paper_id] = IndexedPaper(
                title.split(),
                abstract.split(),
                authors.split() + categories.split(),
                title_text,
                abstract_text,
            )
    return found


def document_frequencies(session: Session, terms: Iterable[str]) -> dict[str, int]:
    """How many papers contain each index term (0 for terms no paper has)."""
    wanted = sorted(set(terms))
    counts = dict.fromkeys(wanted, 0)
    if session.get_bind().dialect.name == "postgresql":
        # ts_stat reads every search_vector once (20 ms for the seeds, O(papers)): much
        # faster than a GIN count per term, as a digest run asks for thousands of terms.
        rows = session.execute(
            text(
                "SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM papers') "
                "WHERE word = ANY(CAST(:terms AS text[]))"
            ),
            {"terms": wanted},
        )
        counts.update((term, int(doc)) for term, doc in rows)
        return counts
    statement = text("SELECT term, doc FROM papers_vocab WHERE term IN :terms").bindparams(
        bindparam("terms", expanding=True)
    )
    for start in range(0, len(wanted), 500):
        rows = session.execute(statement, {"terms": wanted[start : start + 500]})
        counts.update((term, int(doc)) for term, doc in rows)
    return counts


@dataclass(frozen=True)
class CorpusSize:
    papers: int
    title_terms: float  # average length
    abstract_terms: float


def corpus_size(session: Session) -> CorpusSize:
    """The number of papers and the average length of their analysed title and abstract."""

    def length(column: Any) -> Any:
        return func.length(column) - func.length(func.replace(column, " ", "")) + 1

    count, title, abstract = session.execute(
        select(
            func.count(),
            func.avg(length(Paper.title_terms)),
            func.avg(length(Paper.abstract_terms)),
        )
    ).one()
    return CorpusSize(int(count or 0), float(title or 1.0), float(abstract or 1.0))


def acronym_expansions(session: Session, term: str) -> list[tuple[str, str, int]]:
    """What the acronym index term `term` stands for: (expansion terms, words, papers)."""
    rows = session.execute(
        select(Acronym.expansion_terms, func.max(Acronym.expansion), func.count())
        .where(Acronym.term == term)
        .group_by(Acronym.expansion_terms)
        .order_by(func.count().desc(), Acronym.expansion_terms)
    )
    return [(terms, words, count) for terms, words, count in rows]


def acronyms_for(session: Session, expansion_terms: str) -> list[tuple[str, str, int]]:
    """The acronyms defined as these expansion terms: (acronym term, as written, papers)."""
    rows = session.execute(
        select(Acronym.term, func.min(Acronym.acronym), func.count())
        .where(Acronym.expansion_terms == expansion_terms)
        .group_by(Acronym.term)
        .order_by(func.count().desc(), Acronym.term)
    )
    return [(term, written, count) for term, written, count in rows]


def defined_acronyms(
    session: Session, terms: Iterable[str], ids: Iterable[int]
) -> dict[int, dict[str, set[str]]]:
    """What each of the papers `ids` defines the acronym index `terms` as:
    {paper id: {acronym term: {expansion terms}}}, for the papers that define one."""
    wanted, papers = sorted(set(terms)), list(set(ids))
    found: dict[int, dict[str, set[str]]] = {}
    for start in range(0, len(papers), 500):
        rows = session.execute(
            select(Acronym.paper_id, Acronym.term, Acronym.expansion_terms).where(
                Acronym.term.in_(wanted), Acronym.paper_id.in_(papers[start : start + 500])
            )
        )
        for paper_id, term, expansion in rows:
            found.setdefault(paper_id, {}).setdefault(term, set()).add(expansion)
    return found


def find_paper_by_reference(session: Session, reference: str) -> Paper | None:
    """The paper with this id (as `digest papers` shows) or this arXiv id."""
    if reference.isdigit():
        return session.get(Paper, int(reference))
    return session.scalar(select(Paper).where(Paper.arxiv_id == reference))


def upvotes_as_of(session: Session, ids: Iterable[int], until: datetime) -> dict[int, int]:
    """Each paper's latest upvote count observed at or before `until` (if any)."""
    wanted = list(set(ids))
    found: dict[int, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(UpvoteObservation.paper_id, UpvoteObservation.upvotes)
            .where(UpvoteObservation.paper_id.in_(chunk), UpvoteObservation.observed_at <= until)
            .order_by(UpvoteObservation.observed_at, UpvoteObservation.id)
        )
        found.update((paper_id, upvotes) for paper_id, upvotes in rows)
    return found


def paper_dates(session: Session, ids: Iterable[int]) -> dict[int, tuple[datetime, date | None]]:
    """Each paper's (first seen, published on), by id."""
    found: dict[int, tuple[datetime, date | None]] = {}
    for chunk in _chunks(sorted(set(ids))):
        rows = session.execute(
            select(Paper.id, Paper.first_seen_at, Paper.published_on).where(Paper.id.in_(chunk))
        )
        found.update((paper_id, (seen, published)) for paper_id, seen, published in rows)
    return found


def papers_by_id(session: Session, ids: Iterable[int]) -> dict[int, Paper]:
    wanted = list(set(ids))
    found: dict[int, Paper] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update((p.id, p) for p in session.scalars(select(Paper).where(Paper.id.in_(chunk))))
    return found


def upvote_history(
    session: Session, since: datetime, until: datetime
) -> dict[int, list[tuple[datetime, int]]]:
    """Observations up to `until` of every paper observed in (since, until], oldest first."""
    recent = (
        select(UpvoteObservation.paper_id)
        .where(UpvoteObservation.observed_at > since, UpvoteObservation.observed_at <= until)
        .distinct()
    )
    rows = session.execute(
        select(UpvoteObservation.paper_id, UpvoteObservation.observed_at, UpvoteObservation.upvotes)
        .where(UpvoteObservation.paper_id.in_(recent), UpvoteObservation.observed_at <= until)
        .order_by(UpvoteObservation.paper_id, UpvoteObservation.observed_at, UpvoteObservation.id)
    )
    history: dict[int, list[tuple[datetime, int]]] = {}
    for paper_id, observed_at, upvotes in rows:
        history.setdefault(paper_id, []).append((observed_at, upvotes))
    return history


# --- subscribers, digests and the delivery ledger -------------------------------------


def find_subscriber(session: Session, email_key: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_key == email_key))


def stale_pending_subscribers(session: Session, cutoff: datetime) -> Sequence[Subscriber]:
    """Pending subscribers whose last confirmation request (or creation) is before `cutoff`."""
    requested = func.coalesce(Subscriber.confirm_sent_at, Subscriber.created_at)
    return session.scalars(
        select(Subscriber).where(Subscriber.status == "pending", requested < cutoff)
    ).all()


def list_subscribers(session: Session, status: str | None = None) -> Sequence[Subscriber]:
    statement = (
        select(Subscriber).options(selectinload(Subscriber.topics)).order_by(Subscriber.email_key)
    )
    if status is not None:
        statement = statement.where(Subscriber.status == status)
    return session.scalars(statement).all()


def subscribers_by_key(session: Session, keys: Iterable[str]) -> dict[str, Subscriber]:
    """The stored subscribers among these email keys, with their topics."""
    wanted = list(set(keys))
    found: dict[str, Subscriber] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        statement = (
            select(Subscriber)
            .options(selectinload(Subscriber.topics))
            .where(Subscriber.email_key.in_(chunk))
        )
        found.update((s.email_key, s) for s in session.scalars(statement))
    return found


def insert_subscribers(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert subscribers in bulk (column values); their new ids, in order."""
    if not rows:
        return []
    # Core statements: the ORM's bulk insert would split the rows wherever a value is None.
    table = Subscriber.metadata.tables["subscribers"]
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.connection().execute(statement, list(rows)).scalars())


def update_subscribers(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Update subscribers in bulk: each row holds an `id` and the same other columns."""
    update_rows(session, Subscriber.metadata.tables["subscribers"], ("id",), rows)


def replace_topics(
    session: Session, topics: Mapping[int, Sequence[tuple[str, str | None]]]
) -> None:
    """Set the topics (query, label) of these subscribers in bulk, replacing theirs."""
    ids = list(topics)
    for start in range(0, len(ids), 500):
        session.execute(delete(Topic).where(Topic.subscriber_id.in_(ids[start : start + 500])))
    rows = [
        {"subscriber_id": subscriber_id, "position": position, "query": query, "label": label}
        for subscriber_id, specs in topics.items()
        for position, (query, label) in enumerate(specs)
    ]
    if rows:
        session.connection().execute(insert(Topic.metadata.tables["topics"]), rows)


def iter_subscribers(
    session: Session, status: str | None = None, batch: int = 1000
) -> Iterator[Subscriber]:
    """Every subscriber (in this state) with their topics, by email key, `batch` at a time."""
    statement = (
        select(Subscriber)
        .options(selectinload(Subscriber.topics))
        .order_by(Subscriber.email_key)
        .execution_options(yield_per=batch)
    )
    if status is not None:
        statement = statement.where(Subscriber.status == status)
    yield from session.scalars(statement)


def topic_subscriber_counts(session: Session) -> list[tuple[str, int]]:
    """Each distinct topic query with the number of active subscribers following it."""
    rows = session.execute(
        select(Topic.query, func.count(Topic.subscriber_id))
        .join(Subscriber, Subscriber.id == Topic.subscriber_id)
        .where(Subscriber.status == "active")
        .group_by(Topic.query)
        .order_by(func.count(Topic.subscriber_id).desc(), Topic.query)
    )
    return [(query, count) for query, count in rows]


def _by_subscriber(pairs: Iterable[tuple[int, date]]) -> dict[int, list[date]]:
    days: dict[int, list[date]] = {}
    for subscriber_id, day in pairs:
        days.setdefault(subscriber_id, []).append(day)
    return days


class StoredItem(NamedTuple):
    """A stored digest item as rendering reads it (`render.ItemLike`): a plain row, far
    cheaper to load than a `DigestItem` entity when a send reads thousands."""

    paper_id: int
    kind: str
    topic: str
    topic_label: str | None
    relevance: float
    upvotes: int | None
    upvote_gain: int
    matched: str


_STORED_ITEMS = select(
    DigestItem.digest_id,
    DigestItem.paper_id,
    DigestItem.kind,
    DigestItem.topic,
    DigestItem.topic_label,
    DigestItem.relevance,
    DigestItem.upvotes,
    DigestItem.upvote_gain,
    DigestItem.matched,
).order_by(DigestItem.digest_id, DigestItem.position)


def digest_items(session: Session, digest_ids: Iterable[int]) -> dict[int, list[StoredItem]]:
    """The items of these digests, in order, by digest id (a digest without items is
    left out)."""
    found: dict[int, list[StoredItem]] = {}
    for chunk in _chunks(sorted(set(digest_ids))):
        for row in session.execute(_STORED_ITEMS.where(DigestItem.digest_id.in_(chunk))):
            found.setdefault(row[0], []).append(StoredItem._make(row[1:]))
    return found


def received_papers(
    session: Session, pairs: Iterable[tuple[int, date]]
) -> dict[tuple[int, date], set[int]]:
    """For each (subscriber id, date): the papers in digests that subscriber received (or
    may have) before that date. Pairs with none are left out."""
    days = _by_subscriber(pairs)
    found: dict[tuple[int, date], set[int]] = {}
    for chunk in _chunks(sorted(days)):
        rows = session.execute(
            select(Delivery.subscriber_id, Delivery.digest_date, DigestItem.paper_id)
            .join(Delivery, Delivery.digest_id == DigestItem.digest_id)
            .where(
                Delivery.subscriber_id.in_(chunk),
                Delivery.digest_date < max(day for s in chunk for day in days[s]),
                Delivery.status.in_(RECEIVED_STATUSES),
            )
        )
        for subscriber_id, got_on, paper_id in rows:
            for day in days[subscriber_id]:
                if got_on < day:
                    found.setdefault((subscriber_id, day), set()).add(paper_id)
    return found


def previous_selections(
    session: Session, pairs: Iterable[tuple[int, date]]
) -> dict[tuple[int, date], datetime]:
    """For each (subscriber id, date): when the subscriber's latest earlier digest (received,
    or that found nothing to send) was chosen. Pairs with none are left out."""
    by_day: dict[date, list[int]] = {}
    for subscriber_id, day in pairs:
        by_day.setdefault(day, []).append(subscriber_id)
    found: dict[tuple[int, date], datetime] = {}
    for day, subscriber_ids in by_day.items():
        for chunk in _chunks(sorted(set(subscriber_ids))):
            latest = (
                select(Delivery.subscriber_id, func.max(Delivery.digest_date).label("day"))
                .where(
                    Delivery.subscriber_id.in_(chunk),
                    Delivery.digest_date < day,
                    Delivery.status.in_((*RECEIVED_STATUSES, DeliveryStatus.EMPTY)),
                )
                .group_by(Delivery.subscriber_id)
                .subquery()
            )
            rows = session.execute(
                select(Delivery.subscriber_id, Delivery.selected_at).join(
                    latest,
                    (Delivery.subscriber_id == latest.c.subscriber_id)
                    & (Delivery.digest_date == latest.c.day),
                )
            )
            found.update(((subscriber_id, day), at) for subscriber_id, at in rows)
    return found


def planned_deliveries(
    session: Session, pairs: Iterable[tuple[int, date]]
) -> set[tuple[int, date]]:
    """The (subscriber id, date) pairs among these that already have a delivery row."""
    days = _by_subscriber(pairs)
    found: set[tuple[int, date]] = set()
    for chunk in _chunks(sorted(days)):
        wanted = {day for s in chunk for day in days[s]}
        rows = session.execute(
            select(Delivery.subscriber_id, Delivery.digest_date).where(
                Delivery.subscriber_id.in_(chunk), Delivery.digest_date.in_(wanted)
            )
        )
        found.update((subscriber_id, day) for subscriber_id, day in rows)
    return found


def find_delivery(session: Session, subscriber_id: int, digest_date: date) -> Delivery | None:
    return session.scalar(
        select(Delivery).where(
            Delivery.subscriber_id == subscriber_id, Delivery.digest_date == digest_date
        )
    )


def digest_is_weekly(session: Session, digest_id: int) -> bool:
    """Whether a stored digest went to weekly subscribers (it is then titled "Weekly")."""
    weekday = session.scalar(
        select(Subscriber.weekday)
        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.digest_id == digest_id)
        .order_by(Delivery.id)
        .limit(1)
    )
    return weekday is not None


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


@dataclass(frozen=True)
class NewDigest:
    """A digest's content to store: `items` gives the rows of its items (DigestItem
    columns but `digest_id`), asked for only when the digest is stored."""

    digest_date: date
    content_hash: str
    more_matched: str
    items: Callable[[], list[dict[str, Any]]]


def store_digests(
    session: Session, digests: Sequence[NewDigest], now: datetime
) -> dict[tuple[date, str], int]:
    """The ids of the shared digests with these contents by (date, content hash), storing
    those no subscriber got yet, with their items, in a few statements."""
    table = _table("digests")

    def stored(keys: Sequence[tuple[date, str]]) -> dict[tuple[date, str], int]:
        found: dict[tuple[date, str], int] = {}
        for chunk in _chunks(sorted(keys)):
            rows = session.execute(
                select(table.c.digest_date, table.c.content_hash, table.c.id).where(
                    table.c.content_hash.in_([content_hash for _, content_hash in chunk]),
                    table.c.digest_date.in_({day for day, _ in chunk}),
                )
            )
            found.update(((day, content_hash), digest_id) for day, content_hash, digest_id in rows)
        return found

    ids = stored([(d.digest_date, d.content_hash) for d in digests])
    # In key order, as every planner inserts: two PostgreSQL planners waiting on each
    # other's rows in opposite orders would deadlock.
    missing = sorted(
        (d for d in digests if (d.digest_date, d.content_hash) not in ids),
        key=lambda d: (d.digest_date, d.content_hash),
    )
    rows = [
        {
            "digest_date": d.digest_date,
            "content_hash": d.content_hash,
            "created_at": now,
            "more_matched": d.more_matched,
        }
        for d in missing
    ]
    columns = (table.c.digest_date, table.c.content_hash, table.c.id)
    added = {(day, h): digest_id for day, h, digest_id in insert_new(session, table, rows, columns)}
    items = [
        {**item, "digest_id": added[(d.digest_date, d.content_hash)]}
        for d in missing
        if (d.digest_date, d.content_hash) in added
        for item in d.items()
    ]
    if items:
        session.connection().execute(insert(_table("digest_items")), items)
    ids |= added
    # Stored by another process meanwhile: theirs, with its items, is the same content.
    raced = [(d.digest_date, d.content_hash) for d in missing]
    ids |= stored([key for key in raced if key not in ids])
    return ids


@dataclass(frozen=True)
class Stats:
    papers: int
    with_arxiv_id: int
    observations: int
    by_source: dict[str, int]
    newest_first_seen: str | None


def stats(session: Session) -> Stats:
    rows = session.execute(select(PaperSource.source, func.count()).group_by(PaperSource.source))
    by_source = {source: count for source, count in rows}
    newest = session.scalar(select(func.max(Paper.first_seen_at)))
    return Stats(
        papers=session.scalar(select(func.count()).select_from(Paper)) or 0,
        with_arxiv_id=session.scalar(select(func.count(Paper.arxiv_id))) or 0,
        observations=session.scalar(select(func.count()).select_from(UpvoteObservation)) or 0,
        by_source=by_source,
        newest_first_seen=str(newest) if newest else None,
    )


# --- leases and job runs (the scheduler) ---------------------------------------------


def acquire_lease(
    session: Session, name: str, holder: str, now: datetime, expires_at: datetime
) -> bool:
    """Take or renew lease `name` for `holder` unless another holder's lease is still valid."""
    lease = session.get(Lease, name)
    if lease is None:
        try:
            with session.begin_nested():
                session.add(Lease(name=name, holder=holder, expires_at=expires_at))
            return True
        except IntegrityError:
            return False
    taken = session.execute(
        update(Lease)
        .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
        .values(holder=holder, expires_at=expires_at)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def release_lease(session: Session, name: str, holder: str) -> None:
    lease = session.get(Lease, name)
    if lease is not None and lease.holder == holder:
        session.delete(lease)


def current_lease(session: Session, name: str) -> Lease | None:
    return session.get(Lease, name)


def record_job_run(
    session: Session,
    job: str,
    holder: str,
    started_at: datetime,
    finished_at: datetime,
    ok: bool,
    summary: str,
) -> None:
    session.add(
        JobRun(
            job=job,
            holder=holder,
            started_at=started_at,
            finished_at=finished_at,
            ok=ok,
            summary=summary,
        )
    )


def last_job_run(session: Session, job: str) -> JobRun | None:
    return session.scalar(
        select(JobRun).where(JobRun.job == job).order_by(JobRun.id.desc()).limit(1)
    )


def deliveries_with_status(
    session: Session, statuses: Sequence[str], updated_since: datetime | None = None
) -> Sequence[Delivery]:
    statement = (
        select(Delivery)
        .options(selectinload(Delivery.subscriber))
        .where(Delivery.status.in_(statuses))
        .order_by(Delivery.digest_date, Delivery.id)
    )
    if updated_since is not None:
        statement = statement.where(Delivery.updated_at >= updated_since)
    return session.scalars(statement).all()
