"""`digest ingest`, `papers`, `stats` and `match`: loading papers and looking at them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from digest.app import App, safe_url
from digest.cli.common import db, ingest, print_table, queries, query_plan, relevance
from digest.errors import shown

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from digest.models import Paper


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


@click.command("ingest")
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


@click.command("papers")
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


@click.command("stats")
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


def parse_cli_query(text: str) -> queries.Query:
    try:
        return queries.parse_query(text)
    except queries.QueryError as exc:
        raise click.BadParameter(str(exc), param_hint="QUERY") from None


@click.command("match")
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
