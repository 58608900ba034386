"""Bulk subscriber import and export as CSV (`digest subscribers import` / `export`).

The file is UTF-8 CSV with a header row naming its columns, in any order:

    email,topics,timezone,hour,frequency,name,status
    ada@example.org,Diffusion=diffusion; rlhf OR dpo,Europe/London,7,daily,Ada,active

`email` and `topics` (separated by `;`, each `QUERY` or `LABEL=QUERY`; they
replace a subscriber's topics) are required. Every other cell may be empty: a
new subscriber then gets the configured timezone and hour, daily digests and
the `active` status; an existing one keeps what it has. Every value goes
through the same validation as `digest subscribe` (digest.preferences), and a
cell that a spreadsheet would run as a formula is exported behind a `'`, which
the import takes off. An import never moves an unsubscribed or bounced address
back to active or pending: that takes the person's own consent (`digest
subscribe`, or the web front).

Rows are read one by one; a bad row is reported with its line number and
skipped, and the good rows are written in batches of BATCH_SIZE, one
transaction each (new subscribers inserted together, existing ones updated).
A file that cannot be read (not UTF-8, a required, unknown or repeated column)
writes nothing. `export_subscribers` writes the same columns, so an export
imports back unchanged. listmonk's CSV importer is the model.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from digest import db
from digest.errors import DigestError, SubscriberError, shown
from digest.files import FileRefused, read_regular_file
from digest.models import Subscriber
from digest.preferences import (
    Preferences,
    TopicSpec,
    check_papers_exist,
    normalize_email,
    parse_frequency,
    parse_hour,
    parse_preferences,
    parse_topic,
)
from digest.states import SUBSCRIBER_STATUSES
from digest.subscribers import added_times, apply_settings, new_secret

COLUMNS = ("email", "topics", "timezone", "hour", "frequency", "name", "status")
REQUIRED = COLUMNS[:2]
TOPIC_SEPARATOR = ";"
BATCH_SIZE = 1000
# Ample for a million subscribers with a few topics each; the file is held in memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
# Statuses an import may not leave for active or pending: the person said no.
FINAL_STATUSES = ("unsubscribed", "bounced")


class CsvFileError(DigestError):
    """The file cannot be imported at all; nothing was written."""


class ImportInterrupted(DigestError):
    """A batch failed to store (the database error is the cause); those before it are in."""

    def __init__(self, first_line: int) -> None:
        super().__init__(f"stopped at line {first_line}")
        self.first_line = first_line


@dataclass(frozen=True)
class Row:
    """One validated CSV row; a None status means the cell was empty."""

    line: int
    email: str
    key: str
    preferences: Preferences
    status: str | None


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, "
            f"bad rows {len(self.errors)}"
        )


# A cell starting with one of these runs as a formula when the file is opened in a
# spreadsheet: the export writes it behind a quote, which the import takes off.
FORMULA_START = ("=", "+", "-", "@")


def _cell(values: dict[str, str], column: str) -> str | None:
    value = values.get(column, "").strip()
    if value.startswith("'") and value[1:].startswith(FORMULA_START):
        value = value[1:]
    return value or None


def parse_row(line: int, values: dict[str, str]) -> Row:
    """Validate one row's cells; SubscriberError names the bad field."""
    email, key = normalize_email(_cell(values, "email") or "")
    topics = [part.strip() for part in (_cell(values, "topics") or "").split(TOPIC_SEPARATOR)]
    hour = _cell(values, "hour")
    frequency = _cell(values, "frequency")
    weekday = None if frequency is None else parse_frequency(frequency)
    preferences = parse_preferences(
        [topic for topic in topics if topic],
        timezone=_cell(values, "timezone"),
        hour=None if hour is None else parse_hour(hour),
        weekday=weekday,
        daily=frequency is not None and weekday is None,
        name=_cell(values, "name"),
    )
    status = _cell(values, "status")
    if status is not None and status not in SUBSCRIBER_STATUSES:
        raise SubscriberError(
            f"status {shown(status)}: use one of {', '.join(SUBSCRIBER_STATUSES)}"
        )
    return Row(line=line, email=email, key=key, preferences=preferences, status=status)


def read_rows(path: Path, report: ImportReport) -> Iterator[Row]:
    """The valid rows of the CSV file, reporting each bad one in `report`.

    Raises CsvFileError before yielding anything if the file cannot be imported.
    """
    try:
        raw = read_regular_file(path, MAX_FILE_BYTES, "the subscriber import limit")
    except FileRefused as exc:
        raise CsvFileError(f"{path}: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise CsvFileError(f"{path}: line {line}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().casefold() for name in next(reader, [])]
    except csv.Error as exc:
        raise CsvFileError(f"{path}: line 1: not a CSV header ({exc})") from None
    unknown = [name for name in header if name not in COLUMNS]
    twice = sorted({name for name in header if header.count(name) > 1})
    missing = [name for name in REQUIRED if name not in header]
    problem = (
        f"unknown column {shown(unknown[0])}"
        if unknown
        else f"column {shown(twice[0])} appears twice"
        if twice
        else f"no {missing[0]} column"
        if missing
        else None
    )
    if problem is not None:
        raise CsvFileError(
            f"{path}: line 1: {problem}; the header names email, topics and any of: "
            f"{', '.join(COLUMNS[2:])}"
        )
    seen: dict[str, int] = {}
    end = reader.line_num
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end = reader.line_num
            report.errors.append((start, f"not valid CSV: {exc}"))
            continue
        end = reader.line_num
        if not cells or cells == [""]:
            continue
        if len(cells) != len(header):
            report.errors.append((start, f"{len(cells)} cells, the header has {len(header)}"))
            continue
        try:
            row = parse_row(start, dict(zip(header, cells, strict=True)))
        except SubscriberError as exc:
            report.errors.append((start, str(exc)))
            continue
        if row.key in seen:
            report.errors.append((start, f"{row.email} is already on line {seen[row.key]}"))
            continue
        seen[row.key] = start
        yield row


def _batches(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# The columns an import may change on a stored subscriber (besides its topics).
UPDATED = ("email", "name", "status", "timezone", "send_hour", "weekday", "confirmed_at")


def _settings(subscriber: Subscriber) -> tuple[object, ...]:
    return tuple(getattr(subscriber, column) for column in UPDATED)


def _update(subscriber: Subscriber, row: Row, now: datetime) -> bool:
    """Apply a row to a stored subscriber; whether anything changed (topics excepted)."""
    if (
        row.status in ("active", "pending")
        and subscriber.status in FINAL_STATUSES
        and row.status != subscriber.status
    ):
        raise SubscriberError(
            f"{subscriber.email} is {subscriber.status}: an import never resubscribes "
            "(the person can, or `digest subscribe`)"
        )
    before = _settings(subscriber)
    subscriber.email = row.email
    apply_settings(subscriber, row.preferences)
    if row.status is not None:
        subscriber.status = row.status
        if row.status == "active":
            subscriber.confirmed_at = subscriber.confirmed_at or now
    return _settings(subscriber) != before


def _store(
    session: Session,
    batch: Sequence[Row],
    report: ImportReport,
    *,
    now: datetime,
    default_timezone: str,
    default_hour: int,
) -> None:
    """Add or update one batch of rows in `session`, in bulk statements."""
    batch = [row for row in batch if _papers_exist(session, row, report)]
    stored = db.subscribers_by_key(session, [row.key for row in batch])
    added: list[Row] = []
    updated: list[dict[str, object]] = []
    topics: dict[int, list[tuple[str, str | None, datetime]]] = {}
    for row in batch:
        subscriber = stored.get(row.key)
        if subscriber is None:
            added.append(row)
            continue
        try:
            changed = _update(subscriber, row, now)
        except SubscriberError as exc:
            report.errors.append((row.line, str(exc)))
            continue
        wanted = row.preferences.topics
        if [(s.query, s.label) for s in wanted] != [(t.query, t.label) for t in subscriber.topics]:
            topics[subscriber.id] = _topic_values(
                wanted, added_times(wanted, subscriber.topics, now)
            )
            changed = True
        if changed:
            values = dict(zip(UPDATED, _settings(subscriber), strict=True))
            updated.append({"id": subscriber.id, "updated_at": now, **values})
            report.updated += 1
        else:
            report.unchanged += 1
        # Stored below in one statement per batch; the session must not flush it again.
        session.expunge(subscriber)
    db.update_subscribers(session, updated)
    ids = db.insert_subscribers(
        session, [_new_subscriber(row, now, default_timezone, default_hour) for row in added]
    )
    for subscriber_id, row in zip(ids, added, strict=True):
        topics[subscriber_id] = _topic_values(
            row.preferences.topics, [now] * len(row.preferences.topics)
        )
    db.replace_topics(session, topics)
    report.added += len(added)


def _topic_values(
    specs: Sequence[TopicSpec], added: Sequence[datetime]
) -> list[tuple[str, str | None, datetime]]:
    """(query, label, added at) of each topic, for `db.replace_topics`."""
    return [(spec.query, spec.label, at) for spec, at in zip(specs, added, strict=True)]


def _papers_exist(session: Session, row: Row, report: ImportReport) -> bool:
    """Whether every like:ID topic of `row` names a stored paper; else a bad row."""
    try:
        check_papers_exist(session, row.preferences)
    except SubscriberError as exc:
        report.errors.append((row.line, str(exc)))
        return False
    return True


def _new_subscriber(
    row: Row, now: datetime, default_timezone: str, default_hour: int
) -> dict[str, object]:
    """The column values of a subscriber added by a row (`status` active unless given)."""
    preferences = row.preferences
    status = row.status or "active"
    return {
        "email": row.email,
        "email_key": row.key,
        "name": preferences.name or None,
        "status": status,
        "timezone": preferences.timezone or default_timezone,
        "send_hour": default_hour if preferences.hour is None else preferences.hour,
        "weekday": preferences.weekday,
        "secret": new_secret(),
        "created_at": now,
        "confirmed_at": now if status == "active" else None,
        "updated_at": now,
    }


def import_subscribers(
    factory: sessionmaker[Session],
    path: Path,
    *,
    now: datetime,
    default_timezone: str,
    default_hour: int,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Add or update the subscribers of a CSV file, one transaction per batch.

    Bad rows are reported in the result (line, reason) and skipped. With
    `dry_run`, every batch is checked against the database and rolled back.
    """
    report = ImportReport()
    for batch in _batches(read_rows(path, report), batch_size):
        try:
            with db.transaction(factory, write=not dry_run) as session:
                _store(
                    session,
                    batch,
                    report,
                    now=now,
                    default_timezone=default_timezone,
                    default_hour=default_hour,
                )
                if dry_run:
                    session.rollback()
        except SQLAlchemyError as exc:
            raise ImportInterrupted(batch[0].line) from exc
    report.errors.sort()
    return report


def topic_text(query: str, label: str | None) -> str:
    """A stored topic as the import reads it back: `QUERY`, the typed form, or `LABEL=QUERY`.

    A label that would not come back the same (or holds the separator) is left out.
    """
    spec = TopicSpec(query=query, label=label)
    for text in (label or query, f"{label}={query}"):
        if TOPIC_SEPARATOR in text:
            continue
        try:
            if parse_topic(text) == spec:
                return text
        except SubscriberError:
            continue
    return query


def _spreadsheet_safe(value: str) -> str:
    return f"'{value}" if value.startswith(FORMULA_START) else value


def export_subscribers(session: Session, out: TextIO, status: str | None = None) -> int:
    """Write the subscribers (in this state) as import CSV; the number written."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    count = 0
    for subscriber in db.iter_subscribers(session, status):
        topics = f"{TOPIC_SEPARATOR} ".join(
            topic_text(topic.query, topic.label) for topic in subscriber.topics
        )
        cells = (
            subscriber.email,
            topics,
            subscriber.timezone,
            str(subscriber.send_hour),
            subscriber.frequency,
            subscriber.name or "",
            subscriber.status,
        )
        writer.writerow([_spreadsheet_safe(cell) for cell in cells])
        count += 1
    return count
