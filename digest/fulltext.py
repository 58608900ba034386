"""The topic language compiled to each backend's full-text syntax, the same on both.

A plan's retrieval groups (digest.relevance) are phrases of analysed index terms
(digest.text); `fts5_expression` compiles them to an SQLite FTS5 MATCH
expression over the papers_fts columns, `tsquery_expression` to `to_tsquery`
input over papers.search_vector. Both refuse anything but letters and digits in a
term, so no query text can break out of its quotes. Pure functions: `db` runs them.
"""

from __future__ import annotations

from collections.abc import Sequence

from digest.text import Phrase

# --- SQLite FTS5 --------------------------------------------------------------------

# FTS5 columns by query field; an unfielded phrase searches every column.
FTS_COLUMNS = {
    "title": "title_terms",
    "abstract": "abstract_terms",
    "authors": "author_terms",
    "categories": "category_terms",
}
# bm25 weights of the papers_fts columns (title, abstract, authors, categories), used only
# to choose which candidates to rescore when a match is not limited to a window.
BM25_WEIGHTS = "3.0, 1.0, 1.0, 1.0"


def _check_terms(phrase: Phrase) -> None:
    # Index terms hold letters and digits only (digest.text), so a quoted string cannot
    # break out; anything else is refused rather than compiled.
    if not phrase.terms or not all(term.isalnum() for term in phrase.terms):
        raise ValueError(f"not index terms: {phrase.terms!r}")


def _fts5_phrase(phrase: Phrase) -> str:
    _check_terms(phrase)
    quoted = '"' + " ".join(phrase.terms) + '"' + (" *" if phrase.prefix else "")
    return f"{FTS_COLUMNS[phrase.field]} : {quoted}" if phrase.field else quoted


def fts5_expression(groups: Sequence[Sequence[Phrase]], excluded: Sequence[Phrase] = ()) -> str:
    """An FTS5 MATCH expression: every group (any of its phrases), none of `excluded`."""
    expression = " AND ".join(
        "(" + " OR ".join(_fts5_phrase(phrase) for phrase in group) + ")" for group in groups
    )
    for phrase in excluded:
        expression = f"({expression}) NOT {_fts5_phrase(phrase)}"
    return expression


# --- PostgreSQL tsvector ------------------------------------------------------------

# papers.search_vector (migration 0006_pgscale) indexes the same analysed terms as FTS5,
# with the `simple` configuration (the terms are already analysed: it only splits them),
# labelled by field: title A, abstract B, authors C, categories D.
PG_TS_CONFIG = "simple"
PG_FIELD_WEIGHTS = {"title": "A", "abstract": "B", "authors": "C", "categories": "D"}
# ts_rank_cd weights of the labels D, C, B, A: BM25_WEIGHTS, scaled to 1.
PG_RANK_WEIGHTS = "{0.333, 0.333, 0.333, 1.0}"


def _tsquery_phrase(phrase: Phrase) -> str:
    _check_terms(phrase)  # letters and digits only: no quoted lexeme can break out
    weight = PG_FIELD_WEIGHTS[phrase.field] if phrase.field else ""
    lexemes = [f"'{term}'" + (f":{weight}" if weight else "") for term in phrase.terms]
    if phrase.prefix:
        lexemes[-1] = f"'{phrase.terms[-1]}':*{weight}"
    joined = " <-> ".join(lexemes)
    return f"({joined})" if len(lexemes) > 1 else joined


def tsquery_expression(groups: Sequence[Sequence[Phrase]], excluded: Sequence[Phrase] = ()) -> str:
    """`to_tsquery` input: every group (any of its phrases), none of `excluded`."""
    expression = " & ".join(
        "(" + " | ".join(_tsquery_phrase(phrase) for phrase in group) + ")" for group in groups
    )
    for phrase in excluded:
        expression += f" & !{_tsquery_phrase(phrase)}"
    return expression
