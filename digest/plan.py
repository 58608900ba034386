"""Plan stage: choose each due subscriber's digest for a day and write its ledger row.

* `plan_deliveries` chooses the digest of each (subscriber, digest date) that has none
  yet (`digest.select`) and writes the digests, their items and the ledger rows
  (`digest.ledger`) in a few bulk statements.
* `plan_in_batches` streams the due subscribers and plans them `PLAN_BATCH` at a time,
  one transaction each, so memory stays flat; the dry run plans without writing.

`digest.deliver.send_digests` (the CLI's `digest send`, the scheduler's dispatcher) plans
with these, then sends what is queued.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from datetime import date, datetime

from sqlalchemy.orm import Session, sessionmaker

from digest import db, ledger
from digest.config import DigestSettings
from digest.errors import DigestError
from digest.models import Subscriber
from digest.relevance import Corpus
from digest.select import Selection, SelectionRun, histories, record_selections, selection_time

# The due (subscriber, digest date) pairs; any iterable, so they may stream.
DueList = Iterable[tuple[Subscriber, date]]
PLAN_BATCH = 500  # subscribers planned per transaction


def plan_deliveries(
    session: Session,
    due: Iterable[tuple[Subscriber, date]],
    *,
    now: datetime,
    settings: DigestSettings,
    at_send_time: bool = False,
    runs: dict[datetime, SelectionRun] | None = None,
) -> tuple[set[date], int, int]:
    """Choose the digest of each (subscriber, digest date) that has none yet.

    Returns (the digest dates involved, deliveries queued, deliveries empty). What
    the subscribers got before is read for them all at once, and their digests and
    ledger rows are written in a few bulk statements; a row another process planned
    first (the unique constraint) is simply left to it. Batches of one run share
    `runs` (each topic is ranked once per run).
    """
    # With `at_send_time`, each digest is chosen as of its send time (now, if that is
    # still ahead), so a past date or a late catch-up never sees later papers or upvotes;
    # without, as of now (`digest send` for today). Runs at different instants share the
    # corpus statistics.
    runs = {} if runs is None else runs
    corpus = next(iter(runs.values())).corpus if runs else Corpus(session)
    pairs = list(due)
    dates = {day for _, day in pairs}
    planned = db.planned_deliveries(session, [(s.id, day) for s, day in pairs])
    pairs = [(s, day) for s, day in pairs if (s.id, day) not in planned]
    history = histories(session, [(s.id, day) for s, day in pairs])
    chosen: list[tuple[int, Selection]] = []
    failures: list[tuple[int, date, str]] = []
    for subscriber, day in pairs:
        as_of = selection_time(subscriber, day, now) if at_send_time else now
        if as_of not in runs:
            runs[as_of] = SelectionRun(session, as_of, settings, corpus)
        try:
            selection = runs[as_of].select(subscriber, day, history[(subscriber.id, day)])
        except DigestError as exc:
            # This subscriber's stored data (e.g. a topic query an older version
            # accepted) cannot be used: their row fails, everyone else goes on.
            failures.append((subscriber.id, day, f"not planned: {exc}"))
            continue
        chosen.append((subscriber.id, selection))
    ledger.unplannable(session, failures, now)
    queued, empty = record_selections(session, chosen, now, settings.send_empty)
    return dates, queued, empty


def plan_in_batches(
    factory: sessionmaker[Session],
    due: Callable[[Session], DueList],
    *,
    now: datetime,
    settings: DigestSettings,
    at_send_time: bool,
    each: Callable[[Session, list[tuple[Subscriber, date]]], None] | None = None,
    write: bool = True,
) -> tuple[set[date], int]:
    """Plan the due subscribers `PLAN_BATCH` at a time, one transaction each.

    Subscribers stream from their own session and nothing of a batch is kept
    after it, so memory stays flat however many subscribers there are. `each`
    sees every planned batch inside its transaction; without `write`, each
    batch is rolled back (the dry run). Returns (the digest dates, empty plans).
    """
    runs: dict[datetime, SelectionRun] = {}
    dates: set[date] = set()
    empty = 0
    with factory() as reader, factory() as writer:
        pairs = iter(due(reader))
        while batch := list(itertools.islice(pairs, PLAN_BATCH)):
            transaction = writer.begin()
            try:
                if write:
                    writer.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
                planned, _, emptied = plan_deliveries(
                    writer, batch, now=now, settings=settings, at_send_time=at_send_time, runs=runs
                )
                if each is not None:
                    each(writer, batch)
            except BaseException:
                transaction.rollback()
                raise
            if write:
                transaction.commit()
            else:
                transaction.rollback()
            dates |= planned
            empty += emptied
            writer.expunge_all()
    return dates, empty
