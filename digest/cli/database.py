"""`digest db upgrade|status|check`: the database schema and the file's health."""

from __future__ import annotations

import click

from digest.app import App, database_errors, safe_url
from digest.cli.common import db


@click.group("db")
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
