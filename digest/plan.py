"""Plan stage: choose each due subscriber's digest for a day and write its ledger row.

* `plan_deliveries` chooses the digest of each (subscriber, digest date) that has none
  yet (`digest.select`) and writes the digests, their items and the ledger rows
  (`record_selections`, `digest.ledger`) in a few bulk statements.
* `plan_in_batches` streams the due subscribers and plans them `PLAN_BATCH` at a time,
  one transaction each, so memory stays flat; the dry run plans without writing.

`digest.deliver.send_digests` (the CLI's `digest send`, the scheduler's dispatcher) plans
with these, then sends what is queued.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from digest import db, ledger
from digest.config import DigestSettings
from digest.days import selection_time
from digest.errors import DigestError
from digest.models import Delivery, Subscriber
from digest.relevance import Corpus
from digest.select import ITEM_FIELDS, Selection, SelectionRun, histories

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


def _item_rows(selection: Selection) -> list[dict[str, object]]:
    # A selected item's fields are exactly the stored item's columns.
    return [
        {"position": position, **{name: getattr(item, name) for name in ITEM_FIELDS}}
        for position, item in enumerate(selection.items)
    ]


def record_selection(
    session: Session,
    subscriber: Subscriber,
    selection: Selection,
    now: datetime,
    send_empty: bool = False,
) -> Delivery:
    """Store one subscriber's selection (`record_selections`); their Delivery row."""
    record_selections(session, [(subscriber.id, selection)], now, send_empty)
    delivery = db.find_delivery(session, subscriber.id, selection.digest_date)
    assert delivery is not None
    return delivery


def record_selections(
    session: Session,
    chosen: Sequence[tuple[int, Selection]],
    now: datetime,
    send_empty: bool = False,
) -> tuple[int, int]:
    """Store (subscriber id, selection) pairs: each content's shared Digest (if any
    items) once, and each subscriber's Delivery row, in a few bulk statements.

    A digest is chosen once per subscriber and day: a row planned first (by another
    process: the unique constraint) is left alone. Returns (queued, empty) rows written.
    """
    contents: dict[tuple[date, str], db.NewDigest] = {}
    keys: list[tuple[date, str] | None] = []
    for _, selection in chosen:
        if not (selection.items or send_empty):
            keys.append(None)
            continue
        key = (selection.digest_date, selection.content_hash)
        keys.append(key)
        if key not in contents:
            more = json.dumps(selection.more, sort_keys=True, ensure_ascii=False)
            contents[key] = db.NewDigest(key[0], key[1], more, partial(_item_rows, selection))
    digest_ids = db.store_digests(session, list(contents.values()), now)
    # The next digest's new papers start where this one's knowledge ended.
    return ledger.plan(
        session,
        [
            ledger.Planned(
                subscriber_id,
                selection.digest_date,
                None if key is None else digest_ids[key],
                selection.as_of or now,
                selection.topics_until,
            )
            for (subscriber_id, selection), key in zip(chosen, keys, strict=True)
        ],
        now,
    )
