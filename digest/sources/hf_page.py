"""Parse the text of a Hugging Face Daily Papers page, as copied from a browser.

A page starts with a header ("Get trending papers in your email inbox!",
"Subscribe", "Daily Papers", "byAK and the research community", then the
page's own date). Sometimes "Subscribe" is glued to the first title. Then each
entry is a title line, an abstract line and, optionally, a metadata block:

      • 5 authors          (or an organization line: "nvidia NVIDIA")
    ·
    Mar 22, 2024 2         (date, optional year, optional upvote count)

Entries may or may not be separated by blank lines, so the parser works on the
non-blank lines only. Year-less dates resolve to the most recent such date not
after the page's date; the page's own date resolves against `as_of`.
"""

from __future__ import annotations

import re
from datetime import date

from digest.errors import shown
from digest.sources.records import (
    PaperRecord,
    ParseResult,
    clean_text,
    plausible_date,
    record_label,
    upvote_count,
)

FORMAT = "hf-page"

HEADER_LINES = {
    "new",
    "get trending papers in your email inbox!",
    "get trending papers in your email inbox once a day!",
    "subscribe",
    "daily papers",
    "byak and the research community",
}
_MARKER = "get trending papers in your email inbox"

_MONTHS = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DATE = re.compile(
    r"(?P<month>[A-Za-z]{3})[a-z]*\.? (?P<day>\d{1,2})(?:, (?P<year>\d{4}))?(?: (?P<upvotes>\d+))?"
)
_AUTHORS = re.compile(r"•\s*(?P<count>\d+) authors?")
_SEPARATOR = "·"
# More authors than any paper has (the largest have a few thousand): no count.
MAX_AUTHORS = 100_000


def looks_like_hf_page(text: str) -> bool:
    head = text[:2000].casefold()
    return _MARKER in head or "byak and the research community" in head


def resolve_date(month: int, day: int, year: int | None, reference: date) -> date:
    """The date itself when it has a year; else the latest such day not after `reference`.

    A date outside the plausible range (`plausible_date`, seen from `reference`) raises.
    """
    if year is not None:
        return plausible_date(date(year, month, day), reference)
    for candidate_year in range(reference.year, reference.year - 8, -1):
        try:
            candidate = date(candidate_year, month, day)
        except ValueError:  # Feb 29 in a non-leap year
            continue
        if candidate <= reference:
            return candidate
    raise ValueError(f"no {month}/{day} within eight years before {reference}")


def _parse_date_line(line: str, reference: date) -> tuple[date, int | None]:
    match = _DATE.fullmatch(line.strip())
    month = _MONTHS.get(match.group("month").casefold()) if match else None
    if match is None or month is None:
        raise ValueError(f"date does not parse: {shown(line.strip())}")
    year = int(match.group("year")) if match.group("year") else None
    try:
        when = resolve_date(month, int(match.group("day")), year, reference)
    except ValueError as exc:
        reason = str(exc) if str(exc).startswith("date out of range") else "date does not parse"
        raise ValueError(f"{reason}: {shown(line.strip())}") from None
    # No count shown is zero votes; a count no page shows is none.
    upvotes = match.group("upvotes")
    return when, upvote_count(_count(upvotes)) if upvotes else 0


def _count(digits: str) -> int | None:
    """The number `digits` say, or None beyond 12 of them (int() refuses 4,300+)."""
    return int(digits) if len(digits) <= 12 else None


def _organization(line: str) -> str:
    # The org line is the avatar's alt text (the org's handle) then its full name.
    parts = line.split(maxsplit=1)
    return clean_text(parts[1] if len(parts) == 2 else line)


def _strip_header(lines: list[str], as_of: date) -> tuple[list[str], date | None, str | None]:
    """Drop the page header; return the remaining lines, the page's own date, and why
    that date was left out when it does not parse (the header goes all the same)."""
    page_date: date | None = None
    error: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        lowered = line.casefold()
        if lowered in HEADER_LINES:
            index += 1
        elif lowered.startswith("subscribe"):
            lines[index] = line[len("subscribe") :].strip()
            break
        elif page_date is None and error is None and _DATE.fullmatch(line) and index > 0:
            try:
                page_date, _ = _parse_date_line(line, as_of)
            except ValueError as exc:
                error = str(exc)
            index += 1
        else:
            break
    return lines[index:], page_date, error


def _is_meta_start(lines: list[str], index: int) -> bool:
    if index >= len(lines):
        return False
    if _AUTHORS.fullmatch(lines[index]):
        return True
    return index + 1 < len(lines) and lines[index + 1] == _SEPARATOR


def parse_hf_page(text: str, as_of: date) -> ParseResult:
    """Parse a Daily Papers page capture into records; bad entries are skipped and reported."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    result = ParseResult(format=FORMAT)
    lines, page_date, page_date_error = _strip_header(lines, as_of)
    if page_date_error:
        result.skipped.append(f"page date: {page_date_error}")
    reference = page_date or as_of
    index = 0
    number = 0
    while index < len(lines):
        number += 1
        title = clean_text(lines[index])
        index += 1
        abstract = ""
        if index < len(lines) and not _is_meta_start(lines, index):
            abstract = clean_text(lines[index])
            index += 1
        author_count: int | None = None
        organization: str | None = None
        published: date | None = None
        upvotes: int | None = None
        error: str | None = None
        if _is_meta_start(lines, index):
            who = lines[index]
            authors = _AUTHORS.fullmatch(who)
            if authors:
                author_count = _count(authors.group("count"))
                if author_count is not None and author_count > MAX_AUTHORS:
                    author_count = None
            elif who != _SEPARATOR:
                organization = _organization(who)
            index += 1
            if index < len(lines) and lines[index] == _SEPARATOR:
                index += 1
                try:
                    published, upvotes = _parse_date_line(lines[index], reference)
                except (ValueError, IndexError) as exc:
                    error = str(exc) if isinstance(exc, ValueError) else "date missing"
                index += 1
            else:
                upvotes = 0  # a metadata block without a date line shows no upvotes
        if error:
            result.skipped.append(f"{record_label(number, title)}: {error}")
            continue
        result.records.append(
            PaperRecord(
                title=title,
                source="hf_page",
                abstract=abstract,
                author_count=author_count,
                organization=organization,
                published_on=published,
                upvotes=upvotes,
            )
        )
    return result
