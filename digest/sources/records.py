"""The record every parser produces, and the helpers they share."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from digest.errors import shown

# Source kinds, from least to most authoritative for bibliographic fields.
SOURCE_PRIORITY = {"hf_page": 1, "hf_api": 2, "arxiv_rss": 3, "arxiv_api": 4}
# The largest vote count stored (a 32-bit integer column on PostgreSQL; SQLite is 64-bit).
MAX_UPVOTES = 2**31 - 1


def upvote_count(value: Any) -> int | None:
    """A vote count as a source gives it, or None when it is not a plausible one: not an
    integer, negative, or beyond what the database stores (one such entry must not fail
    the whole input on one backend and not the other)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UPVOTES:
        return None
    return value


# New-style ids (0704.0001, 2602.23229) and old-style ones (astro-ph/9904306, math.GT/0309136).
_ARXIV_ID = re.compile(
    r"(?P<id>\d{4}\.\d{4,5}|[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$", re.IGNORECASE
)


# Publication dates outside [EARLIEST_DATE, the ingest's day + DAYS_AHEAD] are bad dates:
# no arXiv paper predates arXiv, and a feed's clock may run a little ahead (time zones).
EARLIEST_DATE = date(1990, 1, 1)
DAYS_AHEAD = 3


def plausible_date(day: date, today: date) -> date:
    """`day` if a paper can be published then (seen on `today`); else ValueError."""
    if not EARLIEST_DATE <= day <= today + timedelta(days=DAYS_AHEAD):
        raise ValueError(
            f"date out of range: {day.isoformat()} (before {EARLIEST_DATE.isoformat()} "
            f"or more than {DAYS_AHEAD} days after {today.isoformat()})"
        )
    return day


# RFC 2822's date without a time ("Wed, 20 Aug 2025", "20 Aug 2025"), which feeds write
# and `parsedate_to_datetime` refuses; the weekday is not checked, as feedparser does not.
_RFC2822_DAY = re.compile(r"(?:[A-Za-z]{3},\s*)?(\d{1,2}\s+[A-Za-z]{3}\s+\d{4})")


def _rfc2822(text: str) -> datetime | None:
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        pass
    day = _RFC2822_DAY.fullmatch(text)
    try:  # %b is the C locale's English month abbreviation (Python never sets LC_TIME)
        return datetime.strptime(day.group(1), "%d %b %Y") if day else None
    except ValueError:  # Feb 30
        return None


def publication_date(value: object, today: date) -> date:
    """A date as a source writes it, read strictly: ISO 8601 (`2026-03-01T00:00:00Z`) or
    RFC 2822 (`Wed, 20 Aug 2025 00:00:00 -0400`, or its date alone), its day in UTC; a day
    that does not exist (Feb 30) or is not plausible (`plausible_date`) raises ValueError."""
    text = value.strip() if isinstance(value, str) else None
    parsed: datetime | None = None
    if text:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            parsed = _rfc2822(text)
        try:
            parsed = parsed.astimezone(UTC) if parsed and parsed.tzinfo else parsed
        except OverflowError:  # year 1 or 9999 moved across midnight
            parsed = None
    if parsed is None:
        raise ValueError(f"date does not parse: {shown(value)}")
    return plausible_date(parsed.date(), today)


class InputError(ValueError):
    """A whole input cannot be ingested (unknown format, truncated, binary, too big...)."""


@dataclass(frozen=True)
class PaperRecord:
    """One paper as one source describes it."""

    title: str
    source: str
    arxiv_id: str | None = None
    abstract: str = ""
    authors: tuple[str, ...] = ()
    author_count: int | None = None
    organization: str | None = None
    published_on: date | None = None
    categories: tuple[str, ...] = ()
    url: str | None = None
    pdf_url: str | None = None
    github_url: str | None = None
    project_url: str | None = None
    upvotes: int | None = None
    # The hash of the raw entry this record was parsed from, all of it but its upvote
    # count, when its parser keeps one (`RawRecord`); ingest stores it to know the entry
    # again without parsing it.
    content_hash: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RawRecord:
    """An entry of an input, not parsed yet: what ingest needs to recognise it.

    `content_hash` covers the whole entry but its upvote count (None: an entry that
    cannot be hashed, which is always parsed); `arxiv_id` and `upvotes` are what its
    `PaperRecord` will say. `parse()` makes that record, or raises ValueError with the
    line that reports the entry skipped ("record 3 ('Title'): no date").
    """

    source: str
    arxiv_id: str | None
    content_hash: str | None
    upvotes: int | None
    number: int  # its position in the input, from 1
    entry: Any
    parser: Callable[[RawRecord], PaperRecord]

    def parse(self) -> PaperRecord:
        return self.parser(self)


@dataclass
class ParseResult:
    """What a parser made of one input: its format, good records and skipped ones.

    Parsed lazily (`parse_input(..., lazy=True)`), an input whose parser supports it
    gives `RawRecord`s, each parsed (or skipped) only when ingest needs it.
    """

    format: str
    records: list[PaperRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    raw: list[RawRecord] = field(default_factory=list)


# Bidirectional marks, embeddings, overrides and isolates: U+202E can reverse a Subject
# on screen. Dropped from one-line fields, refused where a person types a label.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# Control characters, including CR and LF, C1 controls, line and paragraph separators and
# the bidirectional controls: never allowed in a one-line field or header.
CONTROL_CHARS = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{BIDI_CONTROLS}]")


# Lone surrogates: no database stores them (UTF-8 cannot encode them).
_SURROGATES = "\ud800-\udfff"
_DROPPED = re.compile(f"[{BIDI_CONTROLS}{_SURROGATES}]")


def clean_text(value: str | None) -> str:
    """The one normaliser of every text field a parser reads, and of one-line messages.

    Runs of whitespace collapse to one space (feeds wrap titles and abstracts) and the
    ends are trimmed; control characters (NUL, ESC, BEL, C1...) become spaces too, and
    bidirectional controls and lone surrogates are dropped: a feed cannot make a title
    that a database refuses (NUL on PostgreSQL, surrogates on both) or that rewrites
    the terminal or the screen it is shown on.
    """
    if not value:
        return ""
    if not value.isascii():
        value = _DROPPED.sub("", value)
    return " ".join(CONTROL_CHARS.sub(" ", value).split())


def one_line(text: str) -> str:
    """No CR, LF or other control characters: safe in headers and one-line fields."""
    return clean_text(text)


_TITLE_WORD = re.compile(r"\w+")


# A title key is stored in 512 characters, and a paper's key is "title:" + it: a longer
# one keeps its first characters and a hash of all of it, so two long titles stay apart.
MAX_TITLE_KEY = 480


def normalize_title(title: str) -> str:
    """The title as an identity: case-folded, accents and punctuation dropped."""
    if title.isascii():  # the same, faster: nothing to decompose
        key = " ".join(_TITLE_WORD.findall(title.lower()))
    else:
        decomposed = unicodedata.normalize("NFKD", title.casefold())
        stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
        key = " ".join(re.findall(r"\w+", stripped))
    if len(key) > MAX_TITLE_KEY:
        digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        key = f"{key[: MAX_TITLE_KEY - len(digest) - 1]} {digest}"
    return key


_ARXIV_URL = re.compile(r"^https?://(?:export\.|www\.)?arxiv\.org/(?:abs|pdf)/")


_PLAIN_ARXIV_ID = re.compile(r"\d{4}\.\d{4,5}")


def arxiv_id_from(value: str | None) -> str | None:
    """The versionless arXiv id at the end of an id, URL or `oai:arXiv.org:` string."""
    if not value:
        return None
    if _PLAIN_ARXIV_ID.fullmatch(value):  # the common case, at once
        return value
    tail = value.strip().rstrip("/")
    for prefix in ("oai:arXiv.org:", "arXiv:"):
        if tail.startswith(prefix):
            tail = tail[len(prefix) :]
    tail = _ARXIV_URL.sub("", tail)
    tail = tail.removesuffix(".pdf")
    match = _ARXIV_ID.fullmatch(tail)
    return match.group("id") if match else None


def record_label(index: int, title: str | None = None) -> str:
    """How a skipped record is named in messages: its position, and title when known."""
    label = f"record {index}"
    if title:
        short = title if len(title) <= 60 else title[:57] + "..."
        label += f" ({short!r})"
    return label
