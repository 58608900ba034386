"""`digest subscribe`, `unsubscribe`, `rotate-secret`, `subscribers [import|export]` and
`topics`: who gets a digest, about what."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from digest.app import App, database_error_message
from digest.cli.common import (
    db,
    files,
    preferences,
    print_table,
    queries,
    query_plan,
    relevance,
    subscribers,
    subscribers_csv,
)
from digest.states import SUBSCRIBER_STATUSES


@click.command("subscribe")
@click.argument("email")
@click.option(
    "--topic",
    "-t",
    "topics",
    multiple=True,
    required=True,
    metavar="[LABEL=]QUERY",
    help="A topic query (repeatable), optionally named: --topic 'Diffusion=diffusion -survey'.",
)
@click.option("--timezone", "--tz", help="IANA timezone of the subscriber (default from config).")
@click.option("--hour", type=click.IntRange(0, 23), help="Local hour to send at, 0-23.")
@click.option("--weekly", metavar="DAY", help="Send weekly on this day (mon..sun) instead.")
@click.option("--daily", is_flag=True, help="Switch a weekly subscriber back to daily.")
@click.option(
    "--name",
    help="Name to greet them by (\"Hello Ada,\"); --name '' removes it. Default: no greeting.",
)
@click.pass_obj
def subscribe_command(
    app: App,
    email: str,
    topics: tuple[str, ...],
    timezone: str | None,
    hour: int | None,
    weekly: str | None,
    daily: bool,
    name: str | None,
) -> None:
    """Add EMAIL as an active subscriber to topics, or update an existing subscriber.

    Re-subscribing replaces the topics and changes only the options given.

    \b
    Topic queries use web-search syntax:
        diffusion model          all words must match (stemmed: "models" too)
        "language model"         a phrase
        rlhf OR dpo              either word
        -survey                  leave out papers with this word or "phrase"
        title:agents             only in the title; also author:hinton, cat:cs.CL
        diffus*                  a word prefix
        *                        everything: the global daily digest

    \b
    Examples:
        digest subscribe ada@example.org --name Ada --topic diffusion --topic 'RLHF=rlhf OR dpo'
        digest subscribe bob@example.org --topic '*' --timezone Asia/Kolkata --hour 8
        digest subscribe eve@example.org --topic 'cat:cs.CL "machine translation"' --weekly mon
    """
    if weekly and daily:
        raise click.UsageError("--weekly and --daily exclude each other")
    now = app.clock()
    settings = app.config.digest
    weekday = preferences.parse_weekday(weekly) if weekly else None
    with db.transaction(app.sessions()) as session:
        subscriber, created = subscribers.subscribe(
            session,
            email,
            list(topics),
            now=now,
            timezone=timezone,
            hour=hour,
            weekday=weekday,
            daily=daily,
            name=name,
            default_timezone=settings.default_timezone,
            default_hour=settings.default_hour,
        )
        summary = (
            f"{'subscribed' if created else 'updated'} {subscriber.email}: "
            f"{subscriber.frequency} at {subscriber.send_hour:02d}:00 {subscriber.timezone}; "
            f"topics: {'; '.join(topic.title for topic in subscriber.topics)}"
        )
    click.echo(summary)


@click.command("unsubscribe")
@click.argument("email")
@click.pass_obj
def unsubscribe_command(app: App, email: str) -> None:
    """Stop sending digests to EMAIL (its history is kept, so nothing repeats if it returns).

    \b
    Example:
        digest unsubscribe ada@example.org
    """
    with db.transaction(app.sessions()) as session:
        subscriber = subscribers.unsubscribe(session, email, app.clock())
        address = subscriber.email
    click.echo(f"unsubscribed {address}")


@click.command("rotate-secret")
@click.argument("email")
@click.pass_obj
def rotate_secret_command(app: App, email: str) -> None:
    """Give EMAIL a new link secret, so every link in the emails sent so far stops working.

    Use it when someone's unsubscribe or preferences links were forwarded or leaked.
    The next digest carries working links again.

    \b
    Example:
        digest rotate-secret ada@example.org
    """
    with db.transaction(app.sessions()) as session:
        address = subscribers.rotate_secret(session, email, app.clock()).email
    click.echo(f"new link secret for {address}: the links in earlier emails no longer work")


@click.group("subscribers", invoke_without_command=True)
@click.option(
    "--status", type=click.Choice(SUBSCRIBER_STATUSES), help="Only subscribers in this state."
)
@click.pass_context
def subscribers_command(ctx: click.Context, status: str | None) -> None:
    """List subscribers with their status, schedule and topics; import or export them as CSV.

    \b
    Examples:
        digest subscribers
        digest subscribers --status active
        digest subscribers import people.csv
        digest subscribers export --out people.csv
    """
    if ctx.invoked_subcommand is not None:
        if status is not None:
            raise click.UsageError("--status goes after the subcommand it is for")
        return
    app = ctx.find_object(App)
    assert app is not None
    with app.sessions()() as session:
        rows = [
            (
                s.email,
                s.status,
                s.frequency,
                f"{s.send_hour:02d}:00 {s.timezone}",
                "; ".join(topic.title for topic in s.topics),
            )
            for s in db.list_subscribers(session, status)
        ]
    print_table(("email", "status", "frequency", "sends at", "topics"), rows)


@subscribers_command.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Check every row against the database, store nothing."
)
@click.pass_obj
def subscribers_import_command(app: App, file: Path, dry_run: bool) -> None:
    """Add or update subscribers from a CSV file, in batches of 1000 rows per transaction.

    The header names the columns, in any order: email and topics (separated by
    ';', each QUERY or LABEL=QUERY; they replace a subscriber's topics) are
    required; timezone, hour, frequency (daily, or weekly DAY), name and status
    may be given. Empty cells keep what a subscriber has (new ones get the
    defaults and `active`). Each bad row is reported as FILE:LINE: reason and skipped;
    the others are imported, and the command then exits 1. An unsubscribed or
    bounced address is never made active again by an import.

    \b
    Examples:
        digest subscribers import people.csv
        digest subscribers import people.csv --dry-run
    """
    settings = app.config.digest
    try:
        report = subscribers_csv.import_subscribers(
            app.sessions(),
            file,
            now=app.clock(),
            default_timezone=settings.default_timezone,
            default_hour=settings.default_hour,
            dry_run=dry_run,
        )
    except subscribers_csv.ImportInterrupted as exc:
        cause = database_error_message(exc.__cause__ or exc, app.config.database_url)
        raise click.ClickException(
            f"{file}: stopped at line {exc.first_line}, whose batch was not stored: {cause}; "
            "the rows before it are imported, run the import again to finish"
        ) from None
    for line, reason in report.errors:
        click.echo(f"{file}:{line}: {reason}", err=True)
    click.echo(("checked, nothing stored: " if dry_run else "") + report.line())
    if report.errors:
        raise click.ClickException(f"{len(report.errors)} bad rows were skipped")


@subscribers_command.command("export")
@click.option(
    "--status", type=click.Choice(SUBSCRIBER_STATUSES), help="Only subscribers in this state."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: stdout).",
)
@click.pass_obj
def subscribers_export_command(app: App, status: str | None, out: Path | None) -> None:
    """Write the subscribers as CSV in the format `digest subscribers import` reads.

    \b
    Examples:
        digest subscribers export > people.csv
        digest subscribers export --status active --out active.csv
    """
    with app.sessions()() as session:
        if out is None:
            subscribers_csv.export_subscribers(session, sys.stdout, status)
            return
        files.check_replaceable(out)
        partial = out.with_name(f".{out.name}.partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as handle:
                count = subscribers_csv.export_subscribers(session, handle, status)
            partial.replace(out)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(f"exported {count} subscribers to {out}", err=True)


@click.command("topics")
@click.pass_obj
def topics_command(app: App) -> None:
    """List the distinct topics of active subscribers, with how many follow each and how
    many papers each matches now.

    \b
    Example:
        digest topics
    """
    with app.sessions()() as session:
        corpus = relevance.Corpus(session)
        rows = [
            (
                query,
                str(count),
                str(
                    len(
                        relevance.rank(
                            session,
                            query_plan.plan_query(
                                session, queries.parse_query(query, stored=True), corpus
                            ),
                            corpus,
                        )
                    )
                ),
            )
            for query, count in db.topic_subscriber_counts(session)
        ]
    print_table(("topic", "subscribers", "papers"), rows)
