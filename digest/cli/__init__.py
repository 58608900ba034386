"""The `digest` command line: thin Click commands that wire config, database and clock.

This package is the only place (with the scheduler and the web app factory) that
loads the configuration, opens the database and reads the clock; everything
below takes them as arguments. User errors end in a one-line message on
stderr and a non-zero exit status, never a traceback: `DigestGroup` is that edge.

This module holds the root group `main` (the `digest` console script and
`python -m digest`); the commands live one module per group:

    papers.py         ingest, papers, stats, match
    subscriptions.py  subscribe, unsubscribe, rotate-secret, subscribers [import|export], topics
    send.py           preview, send
    service.py        run, serve, status
    check.py          check, and the configuration warnings of send and run
    database.py       db upgrade|status|check
    demo.py           demo
    common.py         the stages (each imported when a command first uses it), print_table
"""

from __future__ import annotations

import os
import select
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from digest import __version__
from digest.app import App, database_error_message
from digest.cli.check import check_command
from digest.cli.database import db_group
from digest.cli.demo import demo_command
from digest.cli.papers import ingest_command, match_command, papers_command, stats_command
from digest.cli.send import preview_command, send_command
from digest.cli.service import run_command, serve_command, status_command
from digest.cli.subscriptions import (
    rotate_secret_command,
    subscribe_command,
    subscribers_command,
    topics_command,
    unsubscribe_command,
)
from digest.errors import ConfigError, DigestError


class DigestGroup(click.Group):
    """The CLI edge: every project error and database error ends as one line, exit 1.

    With `digest -v` the full error (traceback, SQL) is printed as well. Output whose
    reader has gone (`digest papers | head -1`) ends the command quietly, exit 1.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # output still buffered meets a closed pipe here, not at exit
            return result
        except BrokenPipeError as exc:
            if not stdout_closed():
                self._explain(ctx)
                raise click.ClickException(str(exc)) from None
            quiet_stdout()
            raise click.exceptions.Exit(1) from None
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


def stdout_closed() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone (a broken pipe
    of its own, not one of a connection the command made). Without poll(): assumed."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test runner's capture)
        return False
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def quiet_stdout() -> None:
    """Point standard output at the null device, so that the output still buffered does
    not fail again when Python flushes it on exit (the recipe of Python's `signal` docs,
    "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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


# The commands of each module, in the order of the table above (`--help` sorts them by name).
for command in (
    ingest_command,
    papers_command,
    stats_command,
    match_command,
    subscribe_command,
    unsubscribe_command,
    rotate_secret_command,
    subscribers_command,
    topics_command,
    preview_command,
    send_command,
    run_command,
    serve_command,
    status_command,
    check_command,
    db_group,
    demo_command,
):
    main.add_command(command)
