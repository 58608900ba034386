"""Parse the Hugging Face `GET /api/daily_papers` JSON: a list of daily-paper items.

Each item wraps a `paper` object (arXiv id, authors, upvotes, publishedAt...);
the item's own `title`, `summary` and `organization` describe the Daily Papers
entry. Optional fields may be missing or null. An item that is not an object,
has no title or carries a date that does not parse is skipped and reported.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from digest.sources.records import (
    InputError,
    PaperRecord,
    ParseResult,
    arxiv_id_from,
    clean_text,
    record_label,
    safe_http_url,
)

FORMAT = "hf-daily-papers-json"


def _text(value: Any) -> str:
    return clean_text(value) if isinstance(value, str) else ""


def _date(value: Any) -> date | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"date does not parse: {value!r}")
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).date()
    except ValueError:
        raise ValueError(f"date does not parse: {value!r}") from None


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


def _upvotes(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _authors(value: Any) -> tuple[str, ...]:
    # `_text` of each author's name, inlined: a paper has several, and ingest parses 100,000s.
    if not isinstance(value, list):
        return ()
    names = [author.get("name") for author in value if isinstance(author, dict)]
    return tuple(filter(None, [" ".join(name.split()) for name in names if isinstance(name, str)]))


def _record(item: Any) -> PaperRecord:
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    nested = item.get("paper")
    paper: dict[str, Any] = nested if isinstance(nested, dict) else {}
    title = _text(item.get("title")) or _text(paper.get("title"))
    if not title:
        raise ValueError("no title")
    authors = _authors(paper.get("authors"))
    published = _date(paper.get("publishedAt") or item.get("publishedAt"))
    arxiv_id = arxiv_id_from(paper.get("id")) if isinstance(paper.get("id"), str) else None
    return PaperRecord(
        title=title,
        source="hf_api",
        arxiv_id=arxiv_id,
        abstract=_text(item.get("summary")) or _text(paper.get("summary")),
        authors=authors,
        author_count=len(authors) or None,
        organization=_organization(item, paper),
        published_on=published,
        github_url=safe_http_url(paper.get("githubRepo")),
        project_url=safe_http_url(paper.get("projectPage")),
        upvotes=_upvotes(paper.get("upvotes")),
    )


def parse_hf_api(document: Any) -> ParseResult:
    """Parse a decoded `daily_papers` response (a JSON list of items)."""
    if not isinstance(document, list):
        raise InputError("JSON is not a list of Hugging Face daily_papers items")
    result = ParseResult(format=FORMAT)
    for number, item in enumerate(document, 1):
        try:
            result.records.append(_record(item))
        except ValueError as exc:
            title = _text(item.get("title")) if isinstance(item, dict) else None
            result.skipped.append(f"{record_label(number, title)}: {exc}")
    return result
