"""`digest demo`: the main job (ingest, subscribe, send, preview) on the bundled seeds."""

from __future__ import annotations

import click

from digest.app import App
from digest.cli.common import db, ingest, resources, subscribers
from digest.cli.papers import run_ingest, stats_command
from digest.cli.send import run_send

DEMO_SUBSCRIBERS = {
    "ada@example.org": ("Ada", ["Diffusion=diffusion", "LLM=language model"], "Europe/London"),
    "grace@example.org": ("Grace", ["*"], "America/Los_Angeles"),
}


@click.command("demo")
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
