"""Parse the Hugging Face `GET /api/daily_papers` JSON: a list of daily-paper items.

Each item wraps a `paper` object (arXiv id, authors, upvotes, publishedAt...);
the item's own `title`, `summary` and `organization` describe the Daily Papers
entry. Optional fields may be missing or null. An item that is not an object,
has no title or carries a date that does not parse is skipped and reported.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Callable
from datetime import date
from typing import Any

from digest.sources.records import (
    InputError,
    PaperRecord,
    ParseResult,
    RawRecord,
    arxiv_id_from,
    clean_text,
    publication_date,
    record_label,
    upvote_count,
)
from digest.urls import safe_http_url

FORMAT = "hf-daily-papers-json"
SOURCE = "hf_api"

# How `_record` reads an item, as a number that goes into every item's hash (`_raw`).
# Raise it whenever that changes: then every item merges once more on its next ingest.
PARSER_VERSION = 2


def _text(value: Any) -> str:
    return clean_text(value) if isinstance(value, str) else ""


def _date(value: Any, today: date) -> date | None:
    return None if value is None else publication_date(value, today)


def _organization(item: dict[str, Any], paper: dict[str, Any]) -> str | None:
    for holder in (item, paper):
        org = holder.get("organization")
        if isinstance(org, dict):
            name = _text(org.get("fullname")) or _text(org.get("name"))
            if name:
                return name
        elif isinstance(org, str) and org.strip():
            return clean_text(org)
    return None


def _authors(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    names = [author.get("name") for author in value if isinstance(author, dict)]
    return tuple(filter(None, [clean_text(name) for name in names if isinstance(name, str)]))


def _record(raw: RawRecord, today: date) -> PaperRecord:
    item = raw.entry
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    nested = item.get("paper")
    paper: dict[str, Any] = nested if isinstance(nested, dict) else {}
    title = _text(item.get("title")) or _text(paper.get("title"))
    if not title:
        raise ValueError("no title")
    authors = _authors(paper.get("authors"))
    published = _date(paper.get("publishedAt") or item.get("publishedAt"), today)
    return PaperRecord(
        title=title,
        source=SOURCE,
        arxiv_id=raw.arxiv_id,
        abstract=_text(item.get("summary")) or _text(paper.get("summary")),
        authors=authors,
        author_count=len(authors) or None,
        organization=_organization(item, paper),
        published_on=published,
        github_url=safe_http_url(paper.get("githubRepo")),
        project_url=safe_http_url(paper.get("projectPage")),
        upvotes=raw.upvotes,
        content_hash=raw.content_hash,
    )


def _parse_raw(raw: RawRecord, today: date) -> PaperRecord:
    try:
        return _record(raw, today)
    except ValueError as exc:
        item = raw.entry
        title = _text(item.get("title")) if isinstance(item, dict) else None
        raise ValueError(f"{record_label(raw.number, title)}: {exc}") from None


def _raw(number: int, item: Any, parse: Callable[[RawRecord], PaperRecord]) -> RawRecord:
    """An item as it comes, with its arXiv id, its upvote count and a hash of the rest.

    The hash covers the whole item (and `PARSER_VERSION`) but `paper.upvotes`, which
    it takes out: the same hash means the same record, whatever its count. It hashes
    the item's pickle, five times faster to make than its repr: the same JSON gives the
    same pickle (a pickle that differs, say from another Python, only costs a merge).
    """
    if not isinstance(item, dict):
        return RawRecord(SOURCE, None, None, None, number, item, parse)
    nested = item.get("paper")
    paper: dict[str, Any] = nested if isinstance(nested, dict) else {}
    upvotes = upvote_count(paper.pop("upvotes", None))
    identifier = paper.get("id")
    arxiv_id = arxiv_id_from(identifier) if isinstance(identifier, str) else None
    try:
        content = pickle.dumps((PARSER_VERSION, item), protocol=5)
    except RecursionError:  # nested too deep
        return RawRecord(SOURCE, arxiv_id, None, upvotes, number, item, parse)
    content_hash = hashlib.blake2b(content, digest_size=16).hexdigest()
    return RawRecord(SOURCE, arxiv_id, content_hash, upvotes, number, item, parse)


def parse_hf_api(document: Any, today: date, *, lazy: bool = False) -> ParseResult:
    """Parse a decoded `daily_papers` response (a JSON list of items), ingested on `today`.

    `lazy`: leave each item a `RawRecord` (in `ParseResult.raw`), parsed when needed.
    """
    if not isinstance(document, list):
        raise InputError("JSON is not a list of Hugging Face daily_papers items")
    result = ParseResult(format=FORMAT)
    parse = functools.partial(_parse_raw, today=today)
    raw = [_raw(number, item, parse) for number, item in enumerate(document, 1)]
    if lazy:
        result.raw = raw
        return result
    for entry in raw:
        try:
            result.records.append(entry.parse())
        except ValueError as exc:
            result.skipped.append(str(exc))
    return result
