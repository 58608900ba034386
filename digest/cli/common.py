"""What the command modules share: the stages, each imported when a command first
uses it, and the table printer of the listings.

A command module takes the stages it needs from here (`from digest.cli.common
import db, subscribers`), so `digest --help` imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

__all__ = [
    "days",
    "db",
    "deliver",
    "doctor",
    "files",
    "ingest",
    "links",
    "preferences",
    "print_table",
    "queries",
    "query_plan",
    "relevance",
    "resources",
    "schedule",
    "selection",
    "subscribers",
    "subscribers_csv",
]


class LazyModule:
    """A module imported when one of its attributes is first used.

    Most commands need only some of the stages, and `digest --help` needs none:
    SQLAlchemy, Alembic, premailer and the stemmer load when a command uses them.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)


if TYPE_CHECKING:
    from digest import (
        days,
        db,
        deliver,
        doctor,
        files,
        ingest,
        links,
        preferences,
        query_plan,
        relevance,
        resources,
        schedule,
        subscribers,
        subscribers_csv,
    )
    from digest import query as queries
    from digest import select as selection
else:
    days = LazyModule("digest.days")
    db = LazyModule("digest.db")
    deliver = LazyModule("digest.deliver")
    doctor = LazyModule("digest.doctor")
    files = LazyModule("digest.files")
    ingest = LazyModule("digest.ingest")
    links = LazyModule("digest.links")
    preferences = LazyModule("digest.preferences")
    queries = LazyModule("digest.query")
    query_plan = LazyModule("digest.query_plan")
    relevance = LazyModule("digest.relevance")
    resources = LazyModule("digest.resources")
    schedule = LazyModule("digest.schedule")
    selection = LazyModule("digest.select")
    subscribers = LazyModule("digest.subscribers")
    subscribers_csv = LazyModule("digest.subscribers_csv")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], width: int = 70) -> None:
    """Print rows in aligned columns; the last column is cut at `width` characters.

    Cells are printed as one line without control characters (`one_line`): a title
    stored before ingest cleaned them cannot move the cursor or retitle the terminal."""
    from digest.sources.records import one_line

    clean = [[one_line(str(cell)) for cell in row] for row in rows]
    cut = [
        [*row[:-1], row[-1] if len(row[-1]) <= width else row[-1][: width - 3] + "..."]
        for row in clean
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *cut, strict=False)]
    for row in [list(header), *cut]:
        click.echo(
            "  ".join(cell.ljust(size) for cell, size in zip(row, widths, strict=True)).rstrip()
        )
    if not rows:
        click.echo("(none)")
