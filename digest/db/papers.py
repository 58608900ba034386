"""The paper store: stored papers, their sources, upvote observations and acronyms.

Ingest reads and writes papers a batch at a time (`stored_papers`, `insert_papers`,
`update_papers`, `store_paper_links`, `replace_acronyms`); selection and the web
front look papers up by id or reference and read their upvote history; `stats`
counts what is stored (`digest stats`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from digest.db.engine import UNSET, chunked, insert_rows, param_marker, table_named, update_rows
from digest.links import is_row_id
from digest.models import Paper, PaperSource, UpvoteObservation


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
    observed_at = table_named("upvote_observations").c.observed_at.type
    to_time = observed_at.dialect_impl(dialect).result_processor(dialect, None)
    placeholder = param_marker(dialect)
    found: dict[int, StoredPaper] = {}
    last: tuple[object, Any] = (UNSET, None)  # observations of one ingest share a time
    for chunk in chunked(sorted(set(values))):
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
    papers = table_named("papers")
    found: dict[int, dict[str, Any]] = {}
    for chunk in chunked(sorted(set(ids))):
        for row in session.execute(select(papers).where(papers.c.id.in_(chunk))).mappings():
            found[row["id"]] = dict(row)
    return found


def insert_papers(session: Session, rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Insert papers in bulk (column values, the same columns in every row); id by key."""
    if not rows:
        return {}
    papers = table_named("papers")
    # Multi-row INSERTs, then the ids by key: an ordered RETURNING would make SQLite
    # insert one row per statement.
    insert_rows(session, papers, rows)
    ids: dict[str, int] = {}
    for chunk in chunked([row["key"] for row in rows]):
        statement = select(papers.c.key, papers.c.id).where(papers.c.key.in_(chunk))
        ids.update((key, paper_id) for key, paper_id in session.execute(statement))
    return ids


def update_papers(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Update papers in bulk: each row holds an `id` and the columns that changed.

    Rows that leave the analysed terms alone do not touch the full-text index: the
    SQLite trigger fires only on an update of a terms column, so those are grouped apart.
    """
    update_rows(session, table_named("papers"), ("id",), rows)


def store_paper_links(
    session: Session,
    sources: Sequence[Mapping[str, Any]],
    source_hashes: Sequence[Mapping[str, Any]],
    observations: Sequence[Mapping[str, Any]],
) -> None:
    """Insert new paper sources and upvote observations, update changed source hashes."""
    insert_rows(session, table_named("paper_sources"), sources)
    update_rows(session, table_named("paper_sources"), ("paper_id", "source"), source_hashes)
    insert_rows(session, table_named("upvote_observations"), observations)


def replace_acronyms(
    session: Session, paper_ids: Sequence[int], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Set the mined acronym definitions of these papers (`rows`), replacing theirs."""
    acronyms = table_named("acronyms")
    for chunk in chunked(sorted(set(paper_ids))):
        session.execute(delete(acronyms).where(acronyms.c.paper_id.in_(chunk)))
    insert_rows(session, acronyms, rows)


def list_papers(session: Session, limit: int = 20) -> Sequence[Paper]:
    """Papers, the most recently published first."""
    return session.scalars(
        select(Paper)
        .order_by(Paper.published_on.desc().nulls_last(), Paper.first_seen_at.desc())
        .limit(limit)
    ).all()


def find_paper_by_reference(session: Session, reference: str) -> Paper | None:
    """The paper with this id (as `digest papers` shows) or this arXiv id; None for an id
    past the id column (an error on PostgreSQL, not a missing row)."""
    if reference.isdigit():
        number = int(reference)
        return session.get(Paper, number) if is_row_id(number) else None
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
    for chunk in chunked(sorted(set(ids))):
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
    """Observations up to `until` of every paper observed in (since, until], oldest first

    (one per instant: the last count stored for it).
    """
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
        observed = history.setdefault(paper_id, [])
        if observed and observed[-1][0] == observed_at:
            # Two counts at one instant (two inputs of one ingest gave the paper): the
            # later one is the count then, and there was no gain between them.
            observed[-1] = (observed_at, upvotes)
        else:
            observed.append((observed_at, upvotes))
    return history


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
