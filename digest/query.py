"""Topic queries in the syntax people know from web search, parsed into a small tree.

    diffusion model            all words must match (stemmed: "models" matches too)
    "language model"           a phrase
    rlhf OR dpo                either side (OR binds the terms next to it)
    -survey  -"position paper" leave out papers with these
    title:agents  author:hinton  cat:cs.CL   restrict a term to a field
    diffus*                    a word prefix
    *                          everything: the global daily digest

`parse_query(text)` returns a `Query`; anything a user can type either parses
or raises `QueryError` with a clear message, and no character of the input
ever reaches the full-text engine except as a quoted token (see
`digest.db.fts5_expression`, which compiles a `Query` for SQLite FTS5).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from digest.errors import DigestError

FIELDS = {"title": "title", "author": "authors", "authors": "authors", "cat": "categories"}
MAX_QUERY_LENGTH = 500
MAX_TERMS = 32

_TOKEN = re.compile(
    r"""
    (?P<neg>-)?
    (?:(?P<field>[A-Za-z]+):)?
    (?:"(?P<phrase>[^"]*)"?|(?P<word>[^\s"]+))
    """,
    re.VERBOSE,
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class QueryError(DigestError, ValueError):
    """A topic query that is empty, malformed or can match nothing."""


@dataclass(frozen=True)
class Term:
    """Words that must appear next to each other, optionally in one field or as a prefix."""

    words: tuple[str, ...]
    field: str | None = None
    prefix: bool = False

    def canonical(self) -> str:
        text = " ".join(self.words)
        text = f'"{text}"' if len(self.words) > 1 else text
        text = f"{text}*" if self.prefix else text
        return f"{_field_name(self.field)}:{text}" if self.field else text


def _field_name(column: str | None) -> str:
    return {"title": "title", "authors": "author", "categories": "cat"}[column or "title"]


@dataclass(frozen=True)
class Query:
    """All `groups` must match (each group: any of its terms), none of `excluded` may.

    `everything` is the `*` query, which matches every paper.
    """

    groups: tuple[tuple[Term, ...], ...] = ()
    excluded: tuple[Term, ...] = ()
    everything: bool = False

    def canonical(self) -> str:
        """A normal form, so equivalent spellings count as one topic."""
        if self.everything:
            return "*"
        parts = [" OR ".join(term.canonical() for term in group) for group in self.groups]
        parts += [f"-{term.canonical()}" for term in self.excluded]
        return " ".join(parts)


def _term(field: str | None, text: str, prefix: bool) -> Term | None:
    # Case-fold and normalize first, so the words extracted are stable when reparsed.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    words = tuple(_WORD.findall(folded))
    if not words:
        return None
    if field is not None:
        column = FIELDS.get(field.casefold())
        if column is None:
            raise QueryError(
                f"unknown field {field + ':'!r}; use title:, author: or cat: (e.g. cat:cs.CL)"
            )
        field = column
    return Term(words=words, field=field, prefix=prefix and len(words) == 1)


def parse_query(text: str) -> Query:
    """Parse a topic query; raise QueryError if it is empty or can match nothing."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"query is longer than {MAX_QUERY_LENGTH} characters")
    stripped = text.strip()
    if stripped == "*":
        return Query(everything=True)
    if not stripped:
        raise QueryError("query is empty")
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    join_next = False
    for match in _TOKEN.finditer(stripped):
        word = match.group("word")
        if word == "OR" and not match.group("neg") and not match.group("field"):
            join_next = bool(groups)
            continue
        if word and word.endswith(":") and word[:-1].lstrip("-").casefold() in FIELDS:
            raise QueryError(f'{word!r} needs a word or "phrase" right after it, e.g. title:agents')
        phrase = match.group("phrase")
        raw = phrase if phrase is not None else word
        prefix = phrase is None and raw.endswith("*")
        term = _term(match.group("field"), raw, prefix)
        if term is None:
            continue
        if match.group("neg"):
            excluded.append(term)
            join_next = False
        elif join_next:
            groups[-1].append(term)
            join_next = False
        else:
            groups.append([term])
    if not groups:
        if excluded:
            raise QueryError("query only excludes words; add at least one word to look for")
        raise QueryError("query has no words to look for")
    if len(excluded) + sum(len(group) for group in groups) > MAX_TERMS:
        raise QueryError(f"query has more than {MAX_TERMS} terms")
    for group in groups:
        if all(term in excluded for term in group):
            raise QueryError(
                f"query requires and excludes {group[0].canonical()!r}, so it can match nothing"
            )
    return Query(groups=tuple(tuple(group) for group in groups), excluded=tuple(excluded))
