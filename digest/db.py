"""The one place that talks to the database: engines, sessions, migrations, queries.

`open_database(url)` returns an engine on an up-to-date schema: the embedded
SQLite default migrates itself, a server database that is behind raises
`SchemaOutOfDate` telling the operator to run `digest db upgrade`.
Backend-specific SQL (SQLite FTS5 today) lives here and nowhere else.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from digest.models import Paper, PaperSource, UpvoteObservation
from digest.resources import resource_dir

SQLITE_BUSY_TIMEOUT_MS = 10_000


class SchemaOutOfDate(RuntimeError):
    """The database schema is behind the code and must be upgraded first."""


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite it creates the folder and sets WAL, FKs and timeouts."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, future=True
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, future=True)


def _alembic_config(connection: Connection) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(resource_dir("migrations")))
    config.attributes["connection"] = connection
    return config


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


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back entirely on any error."""
    with factory() as session, session.begin():
        yield session


# --- papers -----------------------------------------------------------------


def find_paper(session: Session, arxiv_id: str | None, title_key: str) -> Paper | None:
    """The stored paper with this arXiv id, else the first one with this normalized title."""
    if arxiv_id:
        found = session.scalar(select(Paper).where(Paper.arxiv_id == arxiv_id))
        if found is not None:
            return found
    candidates = session.scalars(
        select(Paper).where(Paper.title_key == title_key).order_by(Paper.id)
    ).all()
    for paper in candidates:
        # A title match with a *different* arXiv id is another paper of the same name.
        if not arxiv_id or paper.arxiv_id in (None, arxiv_id):
            return paper
    return None


def latest_observation(session: Session, paper_id: int) -> UpvoteObservation | None:
    return session.scalar(
        select(UpvoteObservation)
        .where(UpvoteObservation.paper_id == paper_id)
        .order_by(UpvoteObservation.observed_at.desc(), UpvoteObservation.id.desc())
        .limit(1)
    )


_WORD = re.compile(r"\w+", re.UNICODE)


def plain_words_query(words: str) -> str | None:
    """An FTS5 query matching all the words of `words`, each quoted: no operator gets through."""
    tokens = _WORD.findall(words)
    return " ".join(f'"{token}"' for token in tokens) or None


def list_papers(session: Session, search: str | None = None, limit: int = 20) -> Sequence[Paper]:
    """Papers newest first, or the best full-text matches for the words in `search`."""
    if search is None:
        return session.scalars(
            select(Paper)
            .order_by(Paper.published_on.desc().nulls_last(), Paper.first_seen_at.desc())
            .limit(limit)
        ).all()
    query = plain_words_query(search)
    if query is None:
        return []
    ranked = text(
        "SELECT rowid FROM papers_fts WHERE papers_fts MATCH :q ORDER BY bm25(papers_fts) LIMIT :n"
    )
    ids = [row[0] for row in session.execute(ranked, {"q": query, "n": limit})]
    papers = {paper.id: paper for paper in session.scalars(select(Paper).where(Paper.id.in_(ids)))}
    return [papers[paper_id] for paper_id in ids]


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
