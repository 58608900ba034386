"""The `digest` command line: thin Click commands that wire config, database and clock.

This is the only module (with the scheduler and the web app factory) that
loads the configuration, opens the database and reads the clock; everything
below takes them as arguments. User errors end in a one-line message on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from digest import __version__, db
from digest.config import Config, ConfigError, load_config
from digest.fetch import HttpFetcher
from digest.ingest import InputSummary, expand_inputs, ingest_inputs
from digest.models import Paper
from digest.resources import resource_dir


def utc_now() -> datetime:
    """The clock, read once per command at the edge."""
    return datetime.now(UTC)


@dataclass
class App:
    """Lazily built config and database for one CLI invocation."""

    config_path: Path | None
    _config: Config | None = None
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(f"config: {exc}") from None
        return self._config

    def engine(self) -> Engine:
        if self._engine is None:
            try:
                self._engine = db.open_database(self.config.database_url)
            except db.SchemaOutOfDate as exc:
                raise click.ClickException(str(exc)) from None
            except OperationalError as exc:
                raise click.ClickException(f"cannot open the database: {exc.orig}") from None
        return self._engine

    def sessions(self) -> sessionmaker[Session]:
        return db.session_factory(self.engine())

    def fetcher(self) -> HttpFetcher:
        settings = self.config.ingest
        return HttpFetcher(
            timeout=settings.timeout,
            retries=settings.retries,
            backoff=settings.backoff,
            host_delay=settings.host_delay,
            max_bytes=settings.max_input_bytes,
            user_agent=settings.user_agent,
        )


class DateTimeParam(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 date or datetime; a naive one is taken as UTC."""

    name = "datetime"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO date or datetime (2026-11-25T06:00)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digest")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DIGEST_CONFIG",
    help="TOML config file (default: $DIGEST_CONFIG, else built-in defaults).",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """papers digest: a daily email of new and trending papers on your topics.

    \b
    Quick look at the bundled seed papers:
        digest demo
    """
    ctx.obj = App(config_path)


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
    engine = db.create_db_engine(app.config.database_url)
    try:
        before = db.current_revision(engine)
        db.upgrade(engine)
        click.echo(f"database at {db.current_revision(engine)} (was {before or 'empty'})")
    except OperationalError as exc:
        raise click.ClickException(f"cannot open the database: {exc.orig}") from None
    finally:
        engine.dispose()


@db_group.command("status")
@click.pass_obj
def db_status(app: App) -> None:
    """Show the database URL, its schema revision and the one this version needs.

    \b
    Example:
        digest db status
    """
    engine = db.create_db_engine(app.config.database_url)
    try:
        current = db.current_revision(engine)
    except OperationalError as exc:
        raise click.ClickException(f"cannot open the database: {exc.orig}") from None
    finally:
        engine.dispose()
    head = db.head_revision()
    click.echo(f"database: {engine.url.render_as_string(hide_password=True)}")
    click.echo(f"schema:   {current or 'empty'} (needs {head})")
    if current != head:
        click.echo("run `digest db upgrade` to bring it up to date")


# --- ingest -----------------------------------------------------------------


def run_ingest(app: App, inputs: Sequence[str], now: datetime) -> list[InputSummary]:
    """Ingest inputs with a progress bar and print one summary line per input."""
    factory = app.sessions()
    fetcher = app.fetcher()
    summaries: list[InputSummary] = []

    def report(summary: InputSummary) -> None:
        summaries.append(summary)
        bar.update(1)

    with click.progressbar(
        length=len(inputs),
        label="ingesting",
        file=sys.stderr,
        show_pos=True,
        hidden=len(inputs) < 2 or not sys.stderr.isatty(),
    ) as bar:
        ingest_inputs(
            factory,
            inputs,
            now=now,
            max_bytes=app.config.ingest.max_input_bytes,
            fetcher=fetcher,
            on_done=report,
        )
    for summary in summaries:
        click.echo(summary.line(), err=not summary.ok)
        for reason in summary.skipped:
            click.echo(f"  skipped {reason}")
    return summaries


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
    summaries = run_ingest(app, expand_inputs(inputs), as_of or utc_now())
    failed = [summary for summary in summaries if not summary.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(summaries)} inputs failed")


# --- looking at the data ----------------------------------------------------


def _paper_line(paper: Paper) -> str:
    when = paper.published_on.isoformat() if paper.published_on else "-" * 10
    votes = "-" if paper.upvotes is None else str(paper.upvotes)
    sources = ",".join(source.source for source in paper.sources)
    title = paper.title if len(paper.title) <= 80 else paper.title[:77] + "..."
    return f"{when}  {votes:>5}  {sources:<20}  {title}"


def print_papers(papers: Sequence[Paper]) -> None:
    click.echo(f"{'published':<10}  {'votes':>5}  {'sources':<20}  title")
    for paper in papers:
        click.echo(_paper_line(paper))


@main.command("papers")
@click.option("--search", "-s", help="Only papers matching all these words (stemmed).")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.pass_obj
def papers_command(app: App, search: str | None, limit: int) -> None:
    """List papers with their date, upvotes and sources, newest or best match first.

    \b
    Examples:
        digest papers --limit 50
        digest papers --search "diffusion model"
    """
    with app.sessions()() as session:
        print_papers(db.list_papers(session, search, limit))


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
    click.echo(f"database:       {app.config.database_url}")
    click.echo(f"papers:         {summary.papers} ({summary.with_arxiv_id} with an arXiv id)")
    for source, count in sorted(summary.by_source.items()):
        click.echo(f"  from {source + ':':<10} {count}")
    click.echo(f"upvote observations: {summary.observations}")
    click.echo(f"last first-seen: {summary.newest_first_seen or 'never'}")


# --- the main job -----------------------------------------------------------


@main.command("demo")
@click.pass_obj
def demo_command(app: App) -> None:
    """Load the bundled seed captures into the database and show what is there.

    \b
    Example:
        digest demo
    """
    now = utc_now()
    seeds = resource_dir("seeds")
    summaries = run_ingest(app, expand_inputs([str(seeds)]), now)
    if any(not summary.ok for summary in summaries):
        raise click.ClickException("the bundled seeds did not load")
    click.echo("")
    click.get_current_context().invoke(stats_command)
    click.echo("")
    with app.sessions()() as session:
        print_papers(db.list_papers(session, None, 10))
