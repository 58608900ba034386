"""Parse arXiv Atom: API query responses and the RSS/Atom announcement listings.

Both are read with feedparser, never with regular expressions over XML.

* API (`export.arxiv.org/api/query`): ids like
  `http://arxiv.org/abs/nucl-ex/0408020v1`, links with or without
  `rel`/`title`, `arxiv:primary_category`, several `<author>` elements.
* Listings (`rss.arxiv.org/rss|atom/<category>`): ids like
  `oai:arXiv.org:2508.13426v1`, a summary starting with
  `arXiv:2508.13426v1 Announce Type: new` then `Abstract: ...`, and the
  authors as one comma-joined `dc:creator`. Replacements of old papers
  (`replace`, `replace-cross`) are not new papers and are skipped.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from digest.errors import shown
from digest.sources.records import (
    InputError,
    PaperRecord,
    ParseResult,
    arxiv_id_from,
    clean_text,
    publication_date,
    record_label,
)
from digest.urls import safe_http_url

API_FORMAT = "arxiv-api-atom"
LISTING_FORMAT = "arxiv-listing"

_ANNOUNCE = re.compile(
    r"^\s*arXiv:\S+\s+Announce Type:\s*(?P<type>[\w-]+)\s*(?:Abstract:\s*)?", re.IGNORECASE
)


def _published(entry: Any, today: date) -> date | None:
    """The entry's date read from its own text, not feedparser's normalised one (which
    turns Feb 30 into Mar 2)."""
    raw = entry.get("published")
    return publication_date(raw, today) if raw else None


def _tags(entry: Any) -> tuple[str, ...]:
    primary = clean_text((entry.get("arxiv_primary_category") or {}).get("term"))
    terms = [primary] if primary else []
    for tag in entry.get("tags") or []:
        term = clean_text(tag.get("term"))
        if term and term not in terms:
            terms.append(term)
    return tuple(terms)


def _pdf_link(entry: Any) -> str | None:
    for link in entry.get("links") or []:
        href = safe_http_url(link.get("href"))
        if href and (link.get("title") == "pdf" or "/pdf/" in href):
            return href
    return None


def is_listing(feed: Any) -> bool:
    ids = [str(entry.get("id", "")) for entry in feed.entries]
    if ids:
        return any(entry_id.startswith("oai:arXiv.org:") for entry_id in ids)
    title = str(feed.feed.get("title", ""))
    link = str(feed.feed.get("link", ""))
    return "updates on arXiv.org" in title or "rss.arxiv.org" in link


def is_api(feed: Any) -> bool:
    feed_id = str(feed.feed.get("id", ""))
    if "arxiv.org/api" in feed_id:
        return True
    return any("arxiv.org/abs/" in str(entry.get("id", "")) for entry in feed.entries)


def _api_record(entry: Any, today: date) -> PaperRecord:
    title = clean_text(entry.get("title"))
    if not title:
        raise ValueError("no title")
    arxiv_id = arxiv_id_from(entry.get("id"))
    if arxiv_id is None:
        raise ValueError(f"not an arXiv id: {shown(entry.get('id'))}")
    published = _published(entry, today)
    authors = tuple(
        clean_text(author.get("name"))
        for author in entry.get("authors") or []
        if clean_text(author.get("name"))
    )
    return PaperRecord(
        title=title,
        source="arxiv_api",
        arxiv_id=arxiv_id,
        abstract=clean_text(entry.get("summary")),
        authors=authors,
        author_count=len(authors) or None,
        published_on=published,
        categories=_tags(entry),
        pdf_url=_pdf_link(entry),
    )


def _listing_record(entry: Any, today: date) -> PaperRecord | str:
    """A record, or the reason the entry is not a new paper."""
    title = clean_text(entry.get("title"))
    if not title:
        raise ValueError("no title")
    arxiv_id = arxiv_id_from(entry.get("id")) or arxiv_id_from(entry.get("link"))
    if arxiv_id is None:
        raise ValueError(f"not an arXiv id: {shown(entry.get('id'))}")
    summary = entry.get("summary") or ""
    announce = _ANNOUNCE.match(summary)
    announce_type = (
        entry.get("arxiv_announce_type") or (announce.group("type") if announce else "new")
    ).lower()
    if announce_type.startswith("replace"):
        return f"announce type {announce_type!r} is a revision of an older paper"
    published = _published(entry, today)
    abstract = summary[announce.end() :] if announce else summary
    # dc:creator carries every author in one comma-joined string.
    creators = ", ".join(
        str(author.get("name", "")) for author in entry.get("authors") or []
    ) or str(entry.get("author", ""))
    authors = tuple(name for name in (clean_text(n) for n in creators.split(",")) if name)
    return PaperRecord(
        title=title,
        source="arxiv_rss",
        arxiv_id=arxiv_id,
        abstract=clean_text(abstract),
        authors=authors,
        author_count=len(authors) or None,
        published_on=published,
        categories=_tags(entry),
    )


def parse_arxiv_feed(feed: Any, today: date) -> ParseResult:
    """Parse a feed already read by feedparser as an API response or a listing, on `today`."""
    if is_listing(feed):
        result = ParseResult(format=LISTING_FORMAT)
        make = _listing_record
    elif is_api(feed):
        result = ParseResult(format=API_FORMAT)
        make = _api_record
    else:
        raise InputError("XML feed is neither an arXiv API response nor an arXiv listing")
    for number, entry in enumerate(feed.entries, 1):
        try:
            made = make(entry, today)
        except ValueError as exc:
            result.skipped.append(f"{record_label(number, clean_text(entry.get('title')))}: {exc}")
            continue
        if isinstance(made, str):
            result.skipped.append(f"{record_label(number, clean_text(entry.get('title')))}: {made}")
        else:
            result.records.append(made)
    return result
