"""Full-text matching and what relevance reads from the index.

A topic's candidate papers through SQLite FTS5 or the PostgreSQL tsvector (the
expressions are compiled by digest.fulltext), limited to a run's `Window`; each
paper's analysed terms (`indexed_papers`), the terms' document frequencies, the
corpus size, and the acronyms papers define (mined at ingest: digest.db.papers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from digest.fulltext import (
    BM25_WEIGHTS,
    PG_RANK_WEIGHTS,
    PG_TS_CONFIG,
    fts5_expression,
    tsquery_expression,
)
from digest.models import Acronym, Paper, UTCDateTime
from digest.text import Phrase

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
