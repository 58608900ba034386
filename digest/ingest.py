"""Ingest stage: read inputs (files, folders, URLs), parse them, merge papers into the database.

`ingest_inputs(factory, names, now=..., ...)` returns one `InputSummary` per
input. Each input is parsed completely before anything is written and then
stored in one transaction, so a bad input writes nothing and never touches
earlier data; a bad record inside a good input is skipped and reported.

How the parsed records become paper rows (a paper the input gives twice merged
once, which source wins a field, upvote history, analysed terms and acronyms,
storing in batches, the hashes that let a record seen before go unparsed) is
digest.merge's `store_records`.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from digest import db
from digest.analysis import Analyser
from digest.files import FileRefused, read_regular_file
from digest.merge import Entry, store_records
from digest.sources import InputError, parse_input
from digest.sources.records import one_line
from digest.urls import is_url, mask_password

logger = logging.getLogger(__name__)


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
    repeated: int = 0  # records of a paper the input gave before, merged into it
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        """One line, whatever the input's name or error holds (CR, LF, nothing at all)."""
        name = mask_password(self.name) if is_url(self.name) else self.name
        name = name if name.strip() and name.isprintable() else repr(name)
        if self.error:
            return f"{name}: error: {one_line(self.error)}"
        repeats = f", {self.repeated} repeated (merged)" if self.repeated else ""
        return (
            f"{name}: {self.format}, {self.parsed} parsed, {self.new} new, "
            f"{self.updated} updated, {self.unchanged} unchanged, {len(self.skipped)} skipped"
            f"{repeats}"
        )


def expand_inputs(names: Iterable[str]) -> list[str]:
    """Folders become the files below them (sorted, hidden ones left out)."""
    expanded: list[str] = []
    for name in names:
        path = Path(name)
        if name.strip() and not is_url(name) and path.is_dir():  # Path("") is "."
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
    if not name.strip():
        raise InputError("empty file name")
    path = Path(name)
    if path.is_dir():
        raise InputError("folder has no files to ingest")
    try:
        return read_regular_file(path, max_bytes, "ingest.max_input_bytes")
    except FileRefused as exc:
        raise InputError(str(exc)) from None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused: a parsed input is hundreds of thousands of
    containers, none in a cycle, that each collection would walk again (a fifth of an
    unchanged re-ingest). Cycles made meanwhile are collected once it resumes. Only in a
    process with no other thread: the pause is process-wide, and in the service
    (`digest run`) a send may be running beside the ingest."""
    enabled = gc.isenabled() and threading.active_count() == 1
    if enabled:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def ingest_data(
    factory: sessionmaker[Session], name: str, data: bytes, now: datetime, analyser: Analyser
) -> InputSummary:
    """Parse one input and store it in a single transaction.

    Entries are parsed as they are stored (`parse_input(..., lazy=True)`), and an entry
    its source gave before is not parsed at all.
    """
    with _collector_paused():
        return _ingest_data(factory, name, data, now, analyser)


def _ingest_data(
    factory: sessionmaker[Session], name: str, data: bytes, now: datetime, analyser: Analyser
) -> InputSummary:
    summary = InputSummary(name=name)
    try:
        result = parse_input(data, now, lazy=True)
    except InputError as exc:
        summary.error = str(exc)
        return summary
    summary.format = result.format
    entries: Sequence[Entry] = result.raw or result.records
    summary.parsed, summary.skipped = len(entries), list(result.skipped)
    try:
        with db.transaction(factory) as session:
            counts, skipped = store_records(session, entries, now, analyser)
    except (IntegrityError, DataError) as exc:
        # This input's data broke a rule; a database that cannot be written at all
        # (read-only, corrupt, locked) raises instead, and stops the command.
        summary.error = f"database error, nothing stored: {db.error_detail(exc)}"
        return summary
    except (ValueError, OverflowError) as exc:
        # A value the database driver refused before the database saw it (the parsers
        # normalise text and bound numbers, so this is a parser's bug): this input only,
        # with the traceback in the log (`digest -v`) for whoever fixes it.
        logger.debug("storing %s failed", summary.name, exc_info=True)
        summary.error = f"cannot store, nothing stored: {type(exc).__name__}: {exc}"
        return summary
    summary.parsed = len(entries) - len(skipped)
    summary.skipped += skipped
    summary.new, summary.updated, summary.unchanged, summary.repeated = (
        counts["new"],
        counts["updated"],
        counts["unchanged"],
        counts["repeated"],
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
    analyser = Analyser()
    try:
        for name in expand_inputs(names):
            try:
                data = read_input(name, max_bytes, fetcher)
            except InputError as exc:
                summary = InputSummary(name=name, error=str(exc))
            else:
                summary = ingest_data(factory, name, data, now, analyser)
            summaries.append(summary)
            if on_done is not None:
                on_done(summary)
    finally:
        analyser.close()
    return summaries
