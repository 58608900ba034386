"""Ingest stage: read inputs (files, folders, URLs), parse them, merge papers into the database.

`ingest_inputs(factory, names, now=..., ...)` returns one `InputSummary` per
input. Each input is parsed completely before anything is written and then
stored in one transaction, so a bad input writes nothing and never touches
earlier data; a bad record inside a good input is skipped and reported.

Merging keeps the richest metadata: a field is filled when it is empty, and
replaced when the new source ranks higher (`SOURCE_PRIORITY`: arXiv API >
arXiv listing > HF API > HF page); author names beat a bare count; categories
are united. An upvote count that differs from the paper's latest observation
is recorded with the ingest time, which is what trending is computed from.

Each stored paper also gets its analysed terms (`digest.text`), which the
full-text index reads, and the acronyms its abstract defines ("Mixture-of-Experts
(MoE)"), which expand queries both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from digest import db, text
from digest.models import Acronym, Paper, PaperSource, UpvoteObservation
from digest.sources import InputError, PaperRecord, parse_input
from digest.sources.records import SOURCE_PRIORITY, normalize_title


class Fetcher(Protocol):
    def fetch(self, url: str) -> bytes: ...


@dataclass
class InputSummary:
    """What happened to one input."""

    name: str
    format: str | None = None
    parsed: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        if self.error:
            return f"{self.name}: error: {self.error}"
        return (
            f"{self.name}: {self.format}, {self.parsed} parsed, {self.new} new, "
            f"{self.updated} updated, {self.unchanged} unchanged, {len(self.skipped)} skipped"
        )


def is_url(name: str) -> bool:
    return name.startswith(("http://", "https://"))


def expand_inputs(names: Iterable[str]) -> list[str]:
    """Folders become the files below them (sorted, hidden ones left out)."""
    expanded: list[str] = []
    for name in names:
        path = Path(name)
        if not is_url(name) and path.is_dir():
            files = sorted(
                str(child)
                for child in path.rglob("*")
                if child.is_file()
                and not any(part.startswith(".") for part in child.relative_to(path).parts)
            )
            expanded.extend(files or [name])
        else:
            expanded.append(name)
    return expanded


def read_input(name: str, max_bytes: int, fetcher: Fetcher | None) -> bytes:
    """The bytes of a file or URL input, refusing anything over `max_bytes`."""
    if is_url(name):
        if fetcher is None:
            raise InputError("URL inputs need a fetcher")
        return fetcher.fetch(name)
    path = Path(name)
    try:
        if path.is_dir():
            raise InputError("folder has no files to ingest")
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(
                f"file is {size} bytes, over the {max_bytes} byte limit (ingest.max_input_bytes)"
            )
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError("no such file") from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InputError(f"file is over the {max_bytes} byte limit (ingest.max_input_bytes)")
    return data


def _better(paper: Paper, record: PaperRecord) -> bool:
    """Whether `record` comes from a higher-ranked source than any the paper has seen."""
    seen = max((SOURCE_PRIORITY.get(s.source, 0) for s in paper.sources), default=0)
    return SOURCE_PRIORITY.get(record.source, 0) > seen


def _new_paper(record: PaperRecord, now: datetime) -> Paper:
    title_key = normalize_title(record.title)
    return Paper(
        key=record.arxiv_id or f"title:{title_key}",
        arxiv_id=record.arxiv_id,
        title_key=title_key,
        title=record.title,
        abstract=record.abstract,
        authors="\n".join(record.authors),
        author_count=len(record.authors) or record.author_count,
        organization=record.organization,
        published_on=record.published_on,
        categories=" ".join(record.categories),
        source_url=record.url,
        pdf_link=record.pdf_url,
        github_url=record.github_url,
        project_url=record.project_url,
        first_seen_at=now,
        updated_at=now,
        sources=[],
        observations=[],
        acronyms=[],
        title_terms="",
        abstract_terms="",
        author_terms="",
        category_terms="",
    )


# Paper attribute <- PaperRecord attribute, for the fields merged one to one.
_FILLED_FIELDS = {
    "abstract": "abstract",
    "organization": "organization",
    "published_on": "published_on",
    "source_url": "url",
    "pdf_link": "pdf_url",
    "github_url": "github_url",
    "project_url": "project_url",
}


def _merge(paper: Paper, record: PaperRecord) -> None:
    """Fold `record` into `paper`, keeping the richest metadata."""
    better = _better(paper, record)
    if record.arxiv_id and not paper.arxiv_id:
        paper.arxiv_id = record.arxiv_id
        paper.key = record.arxiv_id
    if better and record.title:
        paper.title = record.title
        paper.title_key = normalize_title(record.title)
    for attribute, record_attribute in _FILLED_FIELDS.items():
        value = getattr(record, record_attribute)
        if value and (better or not getattr(paper, attribute)):
            setattr(paper, attribute, value)
    if record.authors and (better or not paper.authors):
        paper.authors = "\n".join(record.authors)
    names = len(paper.author_names)
    paper.author_count = names or max(paper.author_count or 0, record.author_count or 0) or None
    categories = paper.category_list
    merged = (
        list(record.categories) + categories if better else categories + list(record.categories)
    )
    paper.categories = " ".join(dict.fromkeys(merged))


def _observe(session: Session, paper: Paper, upvotes: int, now: datetime) -> bool:
    """Record an upvote count that differs from the latest observation."""
    latest = db.latest_observation(session, paper.id) if paper.id is not None else None
    if latest is not None and latest.upvotes == upvotes:
        return False
    paper.observations.append(UpvoteObservation(observed_at=now, upvotes=upvotes))
    if latest is None or latest.observed_at <= now:
        paper.upvotes = upvotes
    return True


def paper_terms(title: str, abstract: str, authors: str, categories: str) -> dict[str, str]:
    """The analysed columns of a paper, as the full-text index reads them."""
    return {
        "title_terms": text.joined(text.terms(title)),
        "abstract_terms": text.joined(text.terms(abstract)),
        "author_terms": text.joined(text.plain_terms(authors)),
        "category_terms": text.joined(text.plain_terms(categories)),
    }


def acronym_rows(paper_id: int | None, title: str, abstract: str) -> list[dict[str, object]]:
    """The acronym definitions in a paper's title and abstract, one row each."""
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for found in text.acronym_definitions(f"{title}. {abstract}"):
        key = (found.term, " ".join(found.expansion_terms))
        rows.setdefault(
            key,
            {
                "paper_id": paper_id,
                "term": key[0][:64],
                "expansion_terms": key[1][:300],
                "acronym": found.acronym[:64],
                "expansion": found.expansion[:300],
            },
        )
    return list(rows.values())


def _index(paper: Paper) -> None:
    """Refresh the paper's analysed terms and acronyms after its text changed."""
    values = paper_terms(paper.title, paper.abstract, paper.authors, paper.categories)
    if all(getattr(paper, column) == value for column, value in values.items()):
        return
    for column, value in values.items():
        setattr(paper, column, value)
    existing = {(a.term, a.expansion_terms): a for a in paper.acronyms}
    kept = []
    for row in acronym_rows(None, paper.title, paper.abstract):
        key = (str(row["term"]), str(row["expansion_terms"]))
        # Reuse a stored row with the same key: a delete plus insert would collide.
        kept.append(
            existing.get(key) or Acronym(**{k: v for k, v in row.items() if k != "paper_id"})
        )
    paper.acronyms = kept


def _snapshot(paper: Paper) -> tuple[object, ...]:
    return tuple(getattr(paper, column.key) for column in Paper.__table__.columns)


def store_record(session: Session, record: PaperRecord, now: datetime) -> str:
    """Insert or merge one record; return 'new', 'updated' or 'unchanged'."""
    paper = db.find_paper(session, record.arxiv_id, normalize_title(record.title))
    outcome = "unchanged"
    if paper is None:
        paper = _new_paper(record, now)
        session.add(paper)
        outcome = "new"
    else:
        before = _snapshot(paper)
        _merge(paper, record)
        if _snapshot(paper) != before:
            outcome = "updated"
    _index(paper)
    grew = False
    if not any(source.source == record.source for source in paper.sources):
        paper.sources.append(PaperSource(source=record.source, first_seen_at=now))
        grew = True
    if record.upvotes is not None:
        grew = _observe(session, paper, record.upvotes, now) or grew
    if grew and outcome == "unchanged":
        outcome = "updated"
    if outcome == "updated":
        paper.updated_at = now
    return outcome


def ingest_data(
    factory: sessionmaker[Session], name: str, data: bytes, now: datetime
) -> InputSummary:
    """Parse one input and store it in a single transaction."""
    summary = InputSummary(name=name)
    try:
        result = parse_input(data, now)
    except InputError as exc:
        summary.error = str(exc)
        return summary
    summary.format = result.format
    summary.parsed = len(result.records)
    summary.skipped = list(result.skipped)
    counts = {"new": 0, "updated": 0, "unchanged": 0}
    try:
        with db.transaction(factory) as session:
            for record in result.records:
                counts[store_record(session, record, now)] += 1
    except (IntegrityError, DataError) as exc:
        # This input's data broke a rule; a database that cannot be written at all
        # (read-only, corrupt, locked) raises instead, and stops the command.
        summary.error = f"database error, nothing stored: {db.error_detail(exc)}"
        return summary
    summary.new, summary.updated, summary.unchanged = (
        counts["new"],
        counts["updated"],
        counts["unchanged"],
    )
    return summary


def ingest_inputs(
    factory: sessionmaker[Session],
    names: Iterable[str],
    *,
    now: datetime,
    max_bytes: int,
    fetcher: Fetcher | None = None,
    on_done: Callable[[InputSummary], None] | None = None,
) -> list[InputSummary]:
    """Ingest every input in turn; one failing input never stops the others."""
    summaries = []
    for name in expand_inputs(names):
        try:
            data = read_input(name, max_bytes, fetcher)
        except InputError as exc:
            summary = InputSummary(name=name, error=str(exc))
        else:
            summary = ingest_data(factory, name, data, now)
        summaries.append(summary)
        if on_done is not None:
            on_done(summary)
    return summaries
