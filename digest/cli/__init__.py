"""The `digest` command line: thin Click commands that wire config, database and clock.

This is the only module (with the scheduler and the web app factory) that
loads the configuration, opens the database and reads the clock; everything
below takes them as arguments. User errors end in a one-line message on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from digest import __version__
from digest.app import App, database_error_message
from digest.cli.check import check_command
from digest.cli.common import db, ingest, resources, subscribers
from digest.cli.database import db_group
from digest.cli.papers import (
    ingest_command,
    match_command,
    papers_command,
    run_ingest,
    stats_command,
)
from digest.cli.send import preview_command, run_send, send_command
from digest.cli.service import run_command, serve_command, status_command
from digest.cli.subscriptions import (
    rotate_secret_command,
    subscribe_command,
    subscribers_command,
    topics_command,
    unsubscribe_command,
)
from digest.errors import ConfigError, DigestError

if TYPE_CHECKING:
    pass


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


for command in (
    db_group,
    ingest_command,
    papers_command,
    stats_command,
    match_command,
    subscribe_command,
    unsubscribe_command,
    rotate_secret_command,
    subscribers_command,
    topics_command,
    check_command,
    preview_command,
    send_command,
    run_command,
    serve_command,
    status_command,
):
    main.add_command(command)
