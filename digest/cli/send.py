"""`digest preview` and `digest send`: what a subscriber would receive, and sending it."""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from digest.app import App
from digest.cli.check import print_config_warnings
from digest.cli.common import days, db, deliver, files, schedule, subscribers

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from digest import plan
    from digest.models import Subscriber


def digest_day(digest_date: datetime | None, now: datetime) -> date | None:
    """The --date of `send` and `preview`, refused unless within a year of today.

    A date further off is a typo, and one near the ends of the calendar overflows
    the look-back arithmetic.
    """
    day = digest_date.date() if digest_date else None
    if day is not None and abs((day - now.date()).days) > 366:
        raise click.BadParameter("must be within a year of today", param_hint="'--date'")
    return day


@click.command("preview")
@click.option("--email", "-e", help="Preview what this subscriber would receive now.")
@click.option(
    "--topic",
    "-t",
    "topics",
    multiple=True,
    metavar="[LABEL=]QUERY",
    help="Ad hoc topic (repeatable).",
)
@click.option(
    "--date", "digest_date", type=click.DateTime(["%Y-%m-%d"]), help="Digest date (YYYY-MM-DD)."
)
@click.option(
    "--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="html", show_default=True
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option("--open", "open_it", is_flag=True, help="Open the result in the browser or viewer.")
@click.pass_obj
def preview_command(
    app: App,
    email: str | None,
    topics: tuple[str, ...],
    digest_date: datetime | None,
    fmt: str,
    out: Path | None,
    open_it: bool,
) -> None:
    """Write the digest a subscriber (or ad hoc topics) would get, without sending anything.

    Nothing is marked sent and no history is recorded. The file goes to --out, or
    to the data directory's previews/ folder; its path is printed.

    \b
    Examples:
        digest preview --topic diffusion --topic 'RLHF=rlhf OR dpo'
        digest preview --email ada@example.org --format eml --out ada.eml
        digest preview --topic '*' --date 2026-11-25 --open
    """
    if bool(email) == bool(topics):
        raise click.UsageError("give either --email or at least one --topic")
    now = app.clock()
    day = digest_day(digest_date, now)
    settings = app.config.digest
    about = None
    with app.sessions()() as session:
        if email is not None:
            subscriber = subscribers.existing_subscriber(session, email)
            if not subscribers.sendable([subscriber]):
                raise click.ClickException(
                    f"{subscriber.email} has an unknown timezone {subscriber.timezone!r}: "
                    f"fix it with digest subscribe {subscriber.email} --topic ... --timezone ZONE"
                )
            if day is None:
                grace = timedelta(hours=app.config.schedule.grace_hours)
                coming = schedule.upcoming_digest(session, subscriber, now, grace)
                day = coming.day if coming is not None else None
            elif not days.sends_on(subscriber, day):
                raise click.ClickException(
                    f"{subscriber.email} gets no digest on {day:%a %d %b %Y}: "
                    f"theirs is {subscriber.frequency}"
                )
            if day is not None:
                about = preview_basis(session, subscriber, day, now)
        else:
            subscriber = subscribers.transient_subscriber(
                list(topics), settings.default_timezone, settings.default_hour
            )
        message, html, text = app.mailer().preview(session, subscriber, day, now, settings)
        session.rollback()
    body = {"html": html, "text": text, "eml": message.as_string()}[fmt]
    if out is None:
        slug = re.sub(r"[^a-z0-9]+", "-", (email or "-".join(topics)).casefold()).strip("-")[:40]
        ext = {"html": "html", "text": "txt", "eml": "eml"}[fmt]
        out = app.data_dir() / "previews" / f"preview-{slug or 'all'}.{ext}"
    files.check_replaceable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(body, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc}") from None
    click.echo(f"{message['Subject']}")
    click.echo(str(out))
    if about is not None:
        click.echo(about)
    if open_it:
        click.launch(str(out))


def preview_basis(session: Session, subscriber: Subscriber, day: date, now: datetime) -> str:
    """One line saying which digest a subscriber's preview shows, and as of when."""
    from digest.models import CLAIMABLE_STATUSES, RECEIVED_STATUSES, DeliveryStatus

    row = db.find_delivery(session, subscriber.id, day)
    at = days.send_time(subscriber, day)
    named = f"the digest of {day:%a %d %b %Y} ({at:%Y-%m-%d %H:%M} UTC)"
    if row is None:
        if at <= now:
            return f"{named}: not planned; chosen as of its send time"
        return f"{named}: the next one, as it would be if it were sent now"
    status = DeliveryStatus(row.status)
    if status in CLAIMABLE_STATUSES:
        return f"{named}: planned, not sent yet; as it will be sent"
    if status in RECEIVED_STATUSES:
        return f"{named}: {status}; as it was sent (history, not a preview)"
    if status == DeliveryStatus.EMPTY:
        return f"{named}: nothing was sent (nothing matched)"
    held = "what it held" if row.digest_id is not None else "chosen as of its send time"
    return f"{named}: {status}, not sent; {held}"


def run_send(
    app: App,
    now: datetime,
    *,
    digest_date: date | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    retry_unknown: bool = False,
    stop: threading.Event | None = None,
    workers: int = 1,
) -> deliver.SendReport:
    """Send today's digest to every active subscriber who is due, with a progress bar.

    Setting `stop` (SIGTERM) lets the message in flight finish and be recorded,
    and starts no other. With `workers` > 1, that many sender processes share the queue.
    """

    left_out = 0
    grace = timedelta(hours=app.config.schedule.grace_hours)

    def today(session: Session) -> Iterator[Subscriber]:
        nonlocal left_out
        for subscriber in db.iter_subscribers(session, "active"):
            if not subscribers.sendable(
                [subscriber], lambda warning: click.echo(warning, err=True)
            ):
                left_out += 1
            elif days.is_due_today(subscriber, now):
                yield subscriber

    def due(session: Session) -> plan.DueList:
        # Streamed: the subscribers are planned in batches, never all held at once.
        if digest_date is not None:  # the operator's explicit date
            yield from ((subscriber, digest_date) for subscriber in today(session))
            return
        yield from schedule.allowed_today(session, today(session), now, grace)

    sender = app.sender(should_stop=stop.is_set) if stop is not None else app.sender()
    bars: list[Any] = []
    with contextlib.ExitStack() as stack:

        def start(total: int) -> None:
            bar = click.progressbar(
                length=max(total, 1),
                label="sending",
                file=sys.stderr,
                hidden=not sys.stderr.isatty(),
            )
            bars.append(stack.enter_context(bar))

        sender.on_start = start
        sender.on_progress = lambda _email: bars[0].update(1) if bars else None
        report = deliver.send_digests(
            sender,
            due,
            now=now,
            settings=app.config.digest,
            dry_run=dry_run,
            limit=limit,
            retry_unknown=retry_unknown,
            # Today's digests as of now; a past date's as of its send time.
            at_send_time=digest_date is not None,
            workers=app.send_workers(workers, stop) if workers > 1 and not dry_run else None,
        )
    report.left_out = left_out
    return report


@click.command("send")
@click.option(
    "--date",
    "digest_date",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Digest date (YYYY-MM-DD) instead of each subscriber's local today.",
)
@click.option(
    "--dry-run", is_flag=True, help="Select and render everything, send and record nothing."
)
@click.option("--limit", type=click.IntRange(1), help="Send at most this many messages.")
@click.option(
    "--retry-unknown",
    is_flag=True,
    help="Also resend deliveries whose outcome is unknown (the sender died mid-send).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 32),
    help="Sender processes sharing the queue (default: [delivery] workers, 1).",
)
@click.pass_obj
def send_command(
    app: App,
    digest_date: datetime | None,
    dry_run: bool,
    limit: int | None,
    retry_unknown: bool,
    workers: int | None,
) -> None:
    """Send today's digest to every active subscriber who is due, exactly once.

    Each subscriber has one ledger row per digest date; rerunning never sends
    twice. A temporary (4xx) failure is retried later the same day by the next
    run; a 5xx marks the subscriber bounced; an SMTP login, TLS or policy
    failure stops the run. A send cut short by a crash is `unknown` and is not
    resent unless --retry-unknown is given. --workers N runs N sender processes
    that share the queue (as do several hosts sending from one PostgreSQL database).

    \b
    Examples:
        digest send
        digest send --dry-run
        digest send --retry-unknown
        digest send --workers 4
    """
    print_config_warnings(app)
    now = app.clock()
    day = digest_day(digest_date, now)
    stop = threading.Event()
    signals: list[str] = []

    def announce(name: str) -> None:
        signals.append(name)
        click.echo(f"received {name}: finishing the message in flight", err=True)

    with schedule.stopping_on_signals(stop, announce):
        report = run_send(
            app,
            now,
            digest_date=day,
            dry_run=dry_run,
            limit=limit,
            retry_unknown=retry_unknown,
            stop=stop,
            workers=workers or app.config.delivery.workers,
        )
    click.echo(report.line())
    for address in report.bounced:
        click.echo(f"bounced: {address}", err=True)
    if report.fatal:
        raise click.ClickException(report.fatal)
    if signals:
        raise click.ClickException(
            f"stopped by {signals[0]}: the message in flight was recorded; "
            f"{report.queued} digests wait for the next run"
        )
    if not report.ok:
        raise click.ClickException("not every digest was delivered; see `digest status`")
    if app.config.delivery.transport == "maildir" and report.sent and not dry_run:
        click.echo(f"outbox: {app.config.delivery.maildir}")
