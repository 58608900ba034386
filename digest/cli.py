"""The `digest` command line: thin Click commands that wire config, database and clock.

This is the only module (with the scheduler and the web app factory) that
loads the configuration, opens the database and reads the clock; everything
below takes them as arguments. User errors end in a one-line message on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from digest import __version__
from digest.app import App, database_error_message, database_errors, safe_url
from digest.errors import ConfigError, DigestError, shown
from digest.states import SUBSCRIBER_STATUSES


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
    from sqlalchemy.orm import Session

    from digest import (
        db,
        deliver,
        doctor,
        files,
        ingest,
        links,
        plan,
        query_plan,
        relevance,
        resources,
        schedule,
        subscribers,
        subscribers_csv,
    )
    from digest import query as queries
    from digest import select as selection
    from digest.models import Paper, Subscriber
else:
    db = LazyModule("digest.db")
    deliver = LazyModule("digest.deliver")
    doctor = LazyModule("digest.doctor")
    files = LazyModule("digest.files")
    ingest = LazyModule("digest.ingest")
    links = LazyModule("digest.links")
    queries = LazyModule("digest.query")
    query_plan = LazyModule("digest.query_plan")
    relevance = LazyModule("digest.relevance")
    resources = LazyModule("digest.resources")
    schedule = LazyModule("digest.schedule")
    selection = LazyModule("digest.select")
    subscribers = LazyModule("digest.subscribers")
    subscribers_csv = LazyModule("digest.subscribers_csv")


class DateTimeParam(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 date or datetime; a naive one is taken as UTC."""

    name = "datetime"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            self.fail(
                f"{shown(str(value))} is not an ISO date or datetime (2026-11-25T06:00)", param, ctx
            )
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class DigestGroup(click.Group):
    """The CLI edge: every project error and database error ends as one line, exit 1.

    With `digest -v` the full error (traceback, SQL) is printed as well.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            self._explain(ctx)
            raise click.ClickException(f"config: {exc}") from None
        except DigestError as exc:
            self._explain(ctx)
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            self._explain(ctx)
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            # SQLAlchemy is imported only by the commands that use it.
            errors = sys.modules.get("sqlalchemy.exc")
            if errors is None or not isinstance(exc, errors.SQLAlchemyError):
                raise
            self._explain(ctx)
            app = ctx.find_object(App)
            url = app.config.database_url if app is not None and app._config else "database"
            raise click.ClickException(database_error_message(exc, url)) from None

    @staticmethod
    def _explain(ctx: click.Context) -> None:
        if ctx.meta.get("digest.verbose"):
            traceback.print_exc()


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digest")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DIGEST_CONFIG",
    help="TOML config file (default: $DIGEST_CONFIG, else built-in defaults).",
)
@click.option(
    "--verbose", "-v", is_flag=True, help="On an error, also print the full traceback and SQL."
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """papers digest: a daily email of new and trending papers on your topics.

    \b
    Quick look at the bundled seed papers:
        digest demo
    """
    ctx.meta["digest.verbose"] = verbose
    ctx.obj = App(config_path)
    ctx.call_on_close(ctx.obj.dispose)  # close database connections when the command ends


# --- database ---------------------------------------------------------------


@main.group("db")
def db_group() -> None:
    """Manage the database schema.

    \b
    Example:
        digest db upgrade
    """


@db_group.command("upgrade")
@click.pass_obj
def db_upgrade(app: App) -> None:
    """Apply pending migrations (needed before a server database can be used).

    \b
    Example:
        DIGEST_DATABASE_URL=postgresql://digest@db/digest digest db upgrade
    """
    with database_errors(app.config.database_url):
        engine = db.create_db_engine(app.config.database_url)
        try:
            before = db.current_revision(engine)
            db.upgrade(engine)
            after = db.current_revision(engine)
        finally:
            engine.dispose()
    click.echo(f"database at {after} (was {before or 'empty'})")


@db_group.command("status")
@click.pass_obj
def db_status(app: App) -> None:
    """Show the database URL, its schema revision and the one this version needs.

    \b
    Example:
        digest db status
    """
    with database_errors(app.config.database_url):
        engine = db.create_db_engine(app.config.database_url)
        try:
            current = db.current_revision(engine)
            problems = db.integrity_problems(engine)
        finally:
            engine.dispose()
    head = db.head_revision()
    click.echo(f"database: {safe_url(app.config.database_url)}")
    click.echo(f"schema:   {current or 'empty'} (needs {head})")
    if current != head:
        click.echo("run `digest db upgrade` to bring it up to date")
    if problems:
        raise click.ClickException(
            f"database {safe_url(app.config.database_url)} is damaged (quick check: "
            f"{problems[0]}): restore it from a backup; `digest db check` reports what is damaged"
        )
    click.echo("quick check: ok")


@db_group.command("check")
@click.pass_obj
def db_check(app: App) -> None:
    """Check the whole SQLite file: every page and index, foreign keys, the full-text index.

    Prints what is damaged and exits 1, or prints "ok". It reads every page, so
    it takes a while on a large database; `digest db status` runs the quick check.

    \b
    Example:
        digest db check
    """
    with database_errors(app.config.database_url):
        engine = db.create_db_engine(app.config.database_url)
        try:
            problems = db.integrity_problems(engine, full=True)
        finally:
            engine.dispose()
    where = safe_url(app.config.database_url)
    if engine.dialect.name != "sqlite":
        click.echo(f"{where}: a server database checks itself; nothing to do here")
        return
    for problem in problems:
        click.echo(f"  {problem}")
    if problems:
        raise click.ClickException(
            f"database {where} is damaged ({len(problems)} problems listed above): "
            "restore it from a backup"
        )
    click.echo(f"{where}: ok")


# --- ingest -----------------------------------------------------------------


def run_ingest(app: App, inputs: Sequence[str], now: datetime) -> list[ingest.InputSummary]:
    """Ingest inputs with a progress bar and print one summary line per input.

    The inputs done (stored) are reported even when a later one stops the command.
    """
    app.engine()
    done: list[ingest.InputSummary] = []

    def finished(summary: ingest.InputSummary) -> None:
        done.append(summary)
        bar.update(1)

    try:
        with click.progressbar(
            length=len(inputs),
            label="ingesting",
            file=sys.stderr,
            show_pos=True,
            hidden=len(inputs) < 2 or not sys.stderr.isatty(),
        ) as bar:
            app.ingest(inputs, now, on_done=finished)
    finally:
        for summary in done:
            click.echo(summary.line(), err=not summary.ok)
            for reason in summary.skipped:
                click.echo(f"  skipped {reason}")
    return done


# `digest ingest --as-of` replays an old capture, never one from before arXiv or the future.
EARLIEST_AS_OF = datetime(1990, 1, 1, tzinfo=UTC)


@main.command("ingest")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--as-of",
    type=DateTimeParam(),
    help="Ingest as if now were this time (first-seen and upvote times, year-less dates).",
)
@click.pass_obj
def ingest_command(app: App, inputs: tuple[str, ...], as_of: datetime | None) -> None:
    """Load papers from files, folders or URLs, detecting each input's format.

    Formats: Hugging Face Daily Papers page text, the HF daily_papers JSON API,
    arXiv API Atom responses and arXiv RSS/Atom listing feeds. Each input is
    stored in one transaction: a bad input writes nothing, the others still load.

    \b
    Examples:
        digest ingest seeds/
        digest ingest 'https://export.arxiv.org/api/query?search_query=cat:cs.CL'
        digest ingest capture.txt --as-of 2025-12-09T08:00
    """
    now = app.clock()
    if as_of is not None and not EARLIEST_AS_OF <= as_of <= now:
        raise click.BadParameter(
            f"must be between {EARLIEST_AS_OF:%Y-%m-%d} and now", param_hint="'--as-of'"
        )
    summaries = run_ingest(app, ingest.expand_inputs(inputs), as_of or now)
    failed = [summary for summary in summaries if not summary.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(summaries)} inputs failed")


# --- looking at the data ----------------------------------------------------


def _published(paper: Paper) -> str:
    return paper.published_on.isoformat() if paper.published_on else "-"


def _votes(paper: Paper) -> str:
    return "-" if paper.upvotes is None else str(paper.upvotes)


def print_papers(papers: Sequence[Paper]) -> None:
    rows = [
        (
            str(p.id),
            p.arxiv_id or "-",
            _published(p),
            _votes(p),
            ",".join(s.source for s in p.sources),
            p.title,
        )
        for p in papers
    ]
    print_table(("id", "arxiv", "published", "votes", "sources", "title"), rows)


@main.command("papers")
@click.option("--search", "-s", metavar="QUERY", help="Only papers matching this topic query.")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.pass_obj
def papers_command(app: App, search: str | None, limit: int) -> None:
    """List papers with their ids, date, upvotes and sources, newest or best match first.

    --search takes the topic query syntax of `digest subscribe --help`; the id
    (or the arXiv id) names a paper in a `like:ID` topic.

    \b
    Examples:
        digest papers --limit 50
        digest papers --search "diffusion model -survey"
    """
    with app.sessions()() as session:
        if search is None:
            print_papers(db.list_papers(session, limit))
            return
        result = run_match(session, parse_cli_query(search), limit)
        print_papers([paper for paper, _ in result.papers])


@main.command("stats")
@click.pass_obj
def stats_command(app: App) -> None:
    """Summarize what is in the database.

    \b
    Example:
        digest stats
    """
    with app.sessions()() as session:
        summary = db.stats(session)
    click.echo(f"database:       {safe_url(app.config.database_url)}")
    click.echo(f"papers:         {summary.papers} ({summary.with_arxiv_id} with an arXiv id)")
    for source, count in sorted(summary.by_source.items()):
        click.echo(f"  from {source + ':':<10} {count}")
    click.echo(f"upvote observations: {summary.observations}")
    click.echo(f"last first-seen: {summary.newest_first_seen or 'never'}")


# --- subscribers and topics -------------------------------------------------


def parse_cli_query(text: str) -> queries.Query:
    try:
        return queries.parse_query(text)
    except queries.QueryError as exc:
        raise click.BadParameter(str(exc), param_hint="QUERY") from None


@main.command("subscribe")
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
    weekday = subscribers.parse_weekday(weekly) if weekly else None
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


@main.command("unsubscribe")
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


@main.command("rotate-secret")
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


@main.group("subscribers", invoke_without_command=True)
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


@main.command("topics")
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


@main.command("match")
@click.argument("query")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_obj
def match_command(app: App, query: str, limit: int) -> None:
    """Show the papers a topic QUERY matches, best first, with their relevance and the
    words that matched.

    Relevance is relative to the best match (1.00); a digest leaves out papers
    below `digest.min_relevance`. Papers whose titles name the query go first
    (their relevance counts 1.5 times in the order). The acronym expansions and like:ID terms used
    are listed first. Use it to tune a topic before subscribing; the syntax is in
    `digest subscribe --help`. A query that starts with "-" goes after "--":
    digest match -- '-survey llm'.

    \b
    Examples:
        digest match "diffusion model"
        digest match moe
        digest match 'like:2602.23229 -survey'
        digest match 'title:"language model" -survey' --limit 5
    """
    parsed = parse_cli_query(query)
    with app.sessions()() as session:
        result = run_match(session, parsed, limit)
        rows = [
            (
                str(paper.id),
                f"{match.relevance:.2f}",
                _votes(paper),
                ", ".join(relevance.written_words(paper, match.matched)) or "-",
                paper.title,
            )
            for paper, match in result.papers
        ]
    click.echo(f"query: {parsed.canonical()}")
    for expansion in result.plan.expansions:
        click.echo(f"expanded: {expansion}")
    for reference in result.plan.missing:
        click.echo(f"like:{reference}: no such paper (see `digest papers`)", err=True)
    print_table(("id", "relevance", "votes", "matched", "title"), rows)


@dataclass(frozen=True)
class MatchResult:
    plan: query_plan.Plan
    papers: list[tuple[Paper, relevance.Match]]


def run_match(session: Session, query: queries.Query, limit: int) -> MatchResult:
    """What `query` matches in the whole database, the best `limit` first."""
    plan, found = relevance.search(session, query)
    found = found[:limit]
    papers = db.papers_by_id(session, [match.paper_id for match in found])
    return MatchResult(plan, [(papers[match.paper_id], match) for match in found])


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


# --- preview ----------------------------------------------------------------


def digest_day(digest_date: datetime | None, now: datetime) -> date | None:
    """The --date of `send` and `preview`, refused unless within a year of today.

    A date further off is a typo, and one near the ends of the calendar overflows
    the look-back arithmetic.
    """
    day = digest_date.date() if digest_date else None
    if day is not None and abs((day - now.date()).days) > 366:
        raise click.BadParameter("must be within a year of today", param_hint="'--date'")
    return day


@main.command("preview")
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
            elif not selection.sends_on(subscriber, day):
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
    at = selection.send_time(subscriber, day)
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


# --- send -------------------------------------------------------------------


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
            elif selection.is_due_today(subscriber, now):
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


@main.command("send")
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


# --- deliverability ---------------------------------------------------------


def print_config_warnings(app: App) -> None:
    """The deliverability warnings, once at the start of a real (SMTP) send or run."""
    if app.config.delivery.transport != "smtp":
        return
    for message in doctor.warnings(doctor.config_findings(app.config)):
        click.echo(f"warning: {message}", err=True)


@main.command("check")
@click.option(
    "--dns/--no-dns",
    default=True,
    show_default=True,
    help="Look up the SPF, DMARC and DKIM records (skipped when no DNS server answers).",
)
@click.option(
    "--smtp/--no-smtp",
    default=True,
    show_default=True,
    help="Connect to the SMTP server, when one is configured.",
)
@click.pass_obj
def check_command(app: App, dns: bool, smtp: bool) -> None:
    """Check what a real sender needs for digests to arrive; exit 1 if anything warns.

    Checks that the From domain is a real one, mail.postal_address is set,
    site.base_url is public https, a DKIM key is configured, readable, strong
    and signs (its DNS TXT record is printed to publish), the link-signing key
    is strong, and the SMTP server answers with STARTTLS or TLS. `digest send`
    and `digest run` print the same configuration warnings when they start.

    \b
    Examples:
        digest check
        digest --config /etc/papers-digest/config.toml check --no-dns
    """
    config = app.config
    findings, dkim_key = doctor.config_check(config)
    if dns:
        domain = config.mail.from_address.rpartition("@")[2]
        findings += doctor.check_dns(domain, dkim_key, doctor.resolver_lookup())
    if config.delivery.transport == "smtp":
        if smtp:
            findings += doctor.check_smtp(config.smtp)
    else:
        findings.append(
            doctor.info(
                f"digests go to the Maildir outbox {config.delivery.maildir}; "
                "set smtp.host to send them"
            )
        )
    for level, message in findings:
        click.echo(f"{level:<4}  {message}")
    count = len(doctor.warnings(findings))
    if count:
        click.echo(f"{count} warning{'s' if count != 1 else ''}")
        raise click.exceptions.Exit(1)


# --- the service ------------------------------------------------------------


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def web_options(command: Any) -> Any:
    """--host and --port of the web front (defaults from [web] host and port)."""
    command = click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on.")(
        command
    )
    return click.option("--host", help="Address to listen on (default: [web] host).")(command)


@main.command("run")
@click.option("--verbose", "-v", is_flag=True, help="Log every job at debug level.")
@click.option("--serve", is_flag=True, help="Also serve the web front (as `digest serve`).")
@web_options
@click.pass_obj
def run_command(app: App, verbose: bool, serve: bool, host: str | None, port: int | None) -> None:
    """Run the scheduler: ingest on a cron schedule, send each digest at its local hour.

    The dispatcher runs at start-up and every [schedule] dispatch_minutes; a digest
    not sent within grace_hours of its send time is skipped. Several `digest run`
    processes may share a database: one dispatches, the others stand by. With
    --serve the same process also serves the web front, so one command runs the
    whole service. SIGTERM or Ctrl-C finishes the message in flight and exits 0.

    \b
    Examples:
        DIGEST_CONFIG=/etc/papers-digest/config.toml digest run
        digest run --serve --host 0.0.0.0 --port 8000
    """
    setup_logging(verbose)
    config = app.config
    print_config_warnings(app)
    listening = None
    if serve:
        from digest.web import listen

        # Bound before anything starts, not in the web thread: a host that does not
        # resolve or a port in use is one line, and nothing runs.
        listening = listen(app, host or config.web.host, port or config.web.port)
    stop = threading.Event()
    service = app.service(stop)
    service.install_signal_handlers()
    click.echo(
        f"digest run: dispatching every {config.schedule.dispatch_minutes} min, "
        + (
            f"ingesting {len(config.schedule.sources)} sources on '{config.schedule.ingest_cron}'"
            if config.schedule.sources
            else "no sources to ingest ([schedule] sources)"
        ),
        err=True,
    )
    if listening is None:
        service.run_forever()
        return
    announce_web(app, host, port)
    web = threading.Thread(target=listening.run, args=(stop,), name="digest-web", daemon=True)
    web.start()
    service.run_forever()
    web.join(timeout=15)


def announce_web(app: App, host: str | None, port: int | None) -> None:
    config = app.config
    address = f"http://{host or config.web.host}:{port or config.web.port}"
    click.echo(
        f"digest serve: listening on {address}; public address {config.site.base_url}/ "
        "(the subscribe page)",
        err=True,
    )


@main.command("serve")
@web_options
@click.option("--debug", is_flag=True, help="Use Flask's reloading debug server (development).")
@click.option("--verbose", "-v", is_flag=True, help="Log at debug level.")
@click.pass_obj
def serve_command(app: App, host: str | None, port: int | None, debug: bool, verbose: bool) -> None:
    """Serve the web front: subscribe, confirm, manage, unsubscribe, web copies of digests.

    Runs under the waitress WSGI server (Flask's debug server only with --debug).
    Put it behind a reverse proxy that terminates HTTPS and set site.base_url to
    its public URL; people subscribe at that URL. `digest run --serve` runs it
    together with the scheduler.

    \b
    Examples:
        digest serve
        digest serve --host 0.0.0.0 --port 8080
    """
    from digest.web import create_app, serve

    setup_logging(verbose)
    config = app.config
    if debug:
        announce_web(app, host, port)
        create_app(wiring=app).run(
            host=host or config.web.host, port=port or config.web.port, debug=True
        )
        return
    stop = threading.Event()
    with schedule.stopping_on_signals(
        stop, lambda name: click.echo(f"received {name}: stopping", err=True)
    ):
        serve(
            app,
            host or config.web.host,
            port or config.web.port,
            stop=stop,
            on_listening=lambda: announce_web(app, host, port),
        )


@main.command("status")
@click.pass_obj
def status_command(app: App) -> None:
    """Show the scheduler's next runs, the last results, who is due soon, and problems.

    Problems are deliveries deferred, unknown or in flight, and those that failed
    (with the reply and whether the address bounced) in the last 24 hours.

    \b
    Example:
        digest status
    """
    from digest.models import DeliveryStatus as Status

    now = app.clock()
    config = app.config
    if warning := links.insecure_base_url(config.site.base_url):
        click.echo(f"warning: {warning}")
    with app.sessions()() as session:
        last = {job: db.last_job_run(session, job) for job in ("ingest", "dispatch")}
        lease = db.current_lease(session, schedule.DISPATCH_LEASE)
        grace = timedelta(hours=config.schedule.grace_hours)
        upcoming = schedule.due_within(session, now, timedelta(hours=1), grace)
        problems = [
            *db.deliveries_with_status(session, (Status.DEFERRED, Status.UNKNOWN, Status.SENDING)),
            *db.deliveries_with_status(session, (Status.FAILED,), now - timedelta(days=1)),
        ]
        problem_rows = [
            (
                d.subscriber.email,
                str(d.digest_date),
                d.status + (", bounced" if d.subscriber.status == "bounced" else ""),
                str(d.attempts),
                d.last_reply or "",
            )
            for d in problems
        ]
    last_dispatch = last["dispatch"].started_at if last["dispatch"] else None
    running = lease is not None and lease.expires_at > now
    upcoming_runs = schedule.next_runs(config.schedule, last_dispatch if running else None, now)
    # Without a running `digest run`, nothing runs: say what one would do once started.
    click.echo("next runs:" if running else "next runs, once `digest run` starts:")
    for job, when in upcoming_runs.items():
        if job == "dispatch" and not running:
            click.echo(f"  {job:<9} at start-up")
        else:
            click.echo(f"  {job:<9} {when.isoformat(timespec='minutes') if when else '-'}")
    if lease is not None:
        state = "active" if lease.expires_at > now else "expired"
        click.echo(
            f"dispatcher: {lease.holder} ({state} until {lease.expires_at:%Y-%m-%d %H:%M} UTC)"
        )
    else:
        click.echo("dispatcher: none running")
    click.echo("last runs:")
    for job, run in last.items():
        if run is None:
            click.echo(f"  {job:<9} never")
        else:
            outcome = "ok" if run.ok else "FAILED"
            click.echo(f"  {job:<9} {run.started_at:%Y-%m-%d %H:%M} UTC {outcome}: {run.summary}")
    click.echo(f"due in the next hour: {len(upcoming)}")
    for subscriber, at in upcoming:
        click.echo(
            f"  {at:%H:%M} UTC  {subscriber.email} "
            f"({subscriber.send_hour:02d}:00 {subscriber.timezone})"
        )
    click.echo(f"deferred, unknown, in flight, or failed in the last 24 h: {len(problem_rows)}")
    if problem_rows:
        print_table(("email", "date", "status", "attempts", "last reply"), problem_rows)


# --- the main job -----------------------------------------------------------


DEMO_SUBSCRIBERS = {
    "ada@example.org": ("Ada", ["Diffusion=diffusion", "LLM=language model"], "Europe/London"),
    "grace@example.org": ("Grace", ["*"], "America/Los_Angeles"),
}


@main.command("demo")
@click.pass_obj
def demo_command(app: App) -> None:
    """The main job on the bundled seeds: ingest, subscribe two demo readers, send.

    Loads the seed captures, adds ada@example.org (diffusion, language models) and
    grace@example.org (everything) unless they exist, sends today's digests through
    the configured transport (by default the Maildir outbox) and writes an HTML
    preview. Running it again sends nothing new: each digest goes out once a day.

    \b
    Example:
        digest demo
    """
    now = app.clock()
    summaries = run_ingest(app, ingest.expand_inputs([str(resources.resource_dir("seeds"))]), now)
    if any(not summary.ok for summary in summaries):
        raise click.ClickException("the bundled seeds did not load")
    with db.transaction(app.sessions()) as session:
        for address, (name, topics, timezone) in DEMO_SUBSCRIBERS.items():
            if db.find_subscriber(session, address) is None:
                subscribers.subscribe(
                    session, address, topics, now=now, timezone=timezone, hour=7, name=name
                )
    click.echo("")
    click.get_current_context().invoke(stats_command)
    click.echo("")
    report = run_send(app, now)
    click.echo(report.line())
    if report.fatal or not report.ok:
        raise click.ClickException(report.fatal or "not every demo digest was delivered")
    with app.sessions()() as session:
        ada = db.find_subscriber(session, "ada@example.org")
        assert ada is not None
        _, html, _ = app.mailer().preview(session, ada, None, now, app.config.digest)
    preview = app.config.data_dir / "previews" / "demo-ada.html"
    preview.parent.mkdir(parents=True, exist_ok=True)
    preview.write_text(html, encoding="utf-8")
    if app.config.delivery.transport == "maildir":
        outbox = app.config.delivery.maildir
        click.echo(f"outbox:  {outbox} (a Maildir: open it with mutt -f {outbox}, or read new/)")
    click.echo(f"preview: {preview}")
