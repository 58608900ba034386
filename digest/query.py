"""Topic queries in the syntax people know from web search, parsed into a small tree.

    diffusion model            all words must match (stemmed: "models" matches too)
    "language model"           a phrase
    rlhf OR dpo                either side (OR binds the terms next to it)
    -survey  -"position paper" leave out papers with these
    title:agents  author:hinton  cat:cs.CL   restrict a term to a field
    diffus*                    a word prefix
    *                          everything: the global daily digest
    like:2602.23229  like:42   papers like this one (arXiv id, or id in `digest papers`)

`parse_query(text)` returns a `Query`; anything a user can type either parses
or raises `QueryError` with a clear message. Words are kept as typed only when
typed as acronyms (``RAG``, ``CoDE``), otherwise case-folded; `digest.text`
turns them into index terms and `digest.relevance` matches and ranks them. No
character of the input ever reaches the full-text engine except as a quoted
term of letters and digits (see `digest.fulltext.fts5_expression`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from digest.errors import DigestError, shown
from digest.text import STOP_WORDS, fold, is_acronym

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
# A paper for like:ID: its id in `digest papers`, or an arXiv id (new or old style).
_PAPER_ID = re.compile(r"\d{1,12}|\d{4}\.\d{4,5}|[a-z][a-z.-]{1,30}/\d{7}", re.IGNORECASE)
_VERSION = re.compile(r"v\d+$")


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

    `everything` is the `*` query, which matches every paper. `likes` are the
    papers (arXiv ids or database ids) whose most distinctive terms the query
    also looks for (`digest.relevance` resolves them).
    """

    groups: tuple[tuple[Term, ...], ...] = ()
    excluded: tuple[Term, ...] = ()
    everything: bool = False
    likes: tuple[str, ...] = ()

    def canonical(self) -> str:
        """A normal form, so equivalent spellings count as one topic."""
        if self.everything:
            return "*"
        parts = [f"like:{paper}" for paper in self.likes]
        parts += [" OR ".join(term.canonical() for term in group) for group in self.groups]
        parts += [f"-{term.canonical()}" for term in self.excluded]
        return " ".join(parts)


def _word(word: str, field: str | None) -> str:
    # Acronyms keep their case (RAG is not rag) in titles and abstracts; the rest is folded,
    # so the words extracted are stable when reparsed.
    return word if field in (None, "title") and is_acronym(word) else fold(word)


def _term(field: str | None, text: str, prefix: bool) -> Term | None:
    if field is not None:
        column = FIELDS.get(field.casefold())
        if column is None:
            raise QueryError(
                f"unknown field {shown(field + ':')}; use title:, author:, cat: or like: "
                "(e.g. cat:cs.CL)"
            )
        field = column
    normalized = unicodedata.normalize("NFKC", text)
    words = tuple(_word(word, field) for word in _WORD.findall(normalized))
    words = tuple(word for word in words if word)
    if not words:
        return None
    return Term(words=words, field=field, prefix=prefix and len(words) == 1)


def _paper_id(text: str) -> str:
    """The paper a like: operator names: an arXiv id without version, or a database id."""
    value = _VERSION.sub("", text.strip())
    if not _PAPER_ID.fullmatch(value):
        raise QueryError(
            f"like: takes a paper's number or its arXiv id (like:42, like:2602.23229), "
            f"not {shown(text)}"
        )
    return value.lower() if not value.isdigit() else str(int(value))


def paper_reference(text: str) -> str | None:
    """The paper a like: operator's argument names, normalised as `Query.likes` holds it;
    None if it names none."""
    try:
        return _paper_id(text)
    except QueryError:
        return None


def _only_stop_words(term: Term) -> bool:
    """A term of words with no topic of their own ("the", "of the") in the text or title.

    An author or category may well be one ("author:an"), and a prefix is not a word.
    """
    return (
        term.field in (None, "title")
        and not term.prefix
        and all(word in STOP_WORDS for word in term.words)
    )


def parse_query(text: str, *, stored: bool = False) -> Query:
    """Parse a topic query; raise QueryError if it is empty or can match nothing.

    A query whose words to look for are all stop words ("the", "of the") is refused
    too: stop words are never required, so it would match about every paper. A
    `stored` topic, saved before that rule, is parsed as it was then.
    """
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"query is longer than {MAX_QUERY_LENGTH} characters")
    stripped = text.strip()
    if stripped == "*":
        return Query(everything=True)
    if not stripped:
        raise QueryError("query is empty")
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    likes: list[str] = []
    join_next = False
    for match in _TOKEN.finditer(stripped):
        word = match.group("word")
        if word == "OR" and not match.group("neg") and not match.group("field"):
            join_next = bool(groups)
            continue
        if word and word.endswith(":") and word[:-1].lstrip("-").casefold() in FIELDS:
            raise QueryError(
                f'{shown(word)} needs a word or "phrase" right after it, e.g. title:agents'
            )
        if (
            word
            and not match.group("field")
            and word.endswith(":")
            and word[:-1].lstrip("-").casefold() == "like"
        ):
            # Not the word "like": `like: 42` would quietly be a different topic.
            raise QueryError(f"{shown(word)} needs a paper id right after it, e.g. like:42")
        phrase = match.group("phrase")
        if (match.group("field") or "").casefold() == "like":
            if match.group("neg"):
                raise QueryError("like: cannot be excluded; exclude words instead")
            paper = _paper_id(phrase if phrase is not None else word)
            if paper not in likes:
                likes.append(paper)
            join_next = False
            continue
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
    if not groups and not likes:
        if excluded:
            raise QueryError("query only excludes words; add at least one word to look for")
        raise QueryError("query has no words to look for")
    if not stored and not likes and all(map(_only_stop_words, (t for g in groups for t in g))):
        words = " ".join(dict.fromkeys(word for group in groups for t in group for word in t.words))
        raise QueryError(
            f"query looks only for common words ({words}) that nearly every paper has; "
            "add a word that names the topic"
        )
    if len(likes) + len(excluded) + sum(len(group) for group in groups) > MAX_TERMS:
        raise QueryError(f"query has more than {MAX_TERMS} terms")
    for group in groups:
        if all(term in excluded for term in group):
            raise QueryError(
                f"query requires and excludes {group[0].canonical()!r}, so it can match nothing"
            )
    return Query(
        groups=tuple(tuple(group) for group in groups),
        excluded=tuple(excluded),
        likes=tuple(likes),
    )
