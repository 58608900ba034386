"""`digest run`, `serve` and `status`: the scheduler, the web front, and how they are doing."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import click

from digest.app import App
from digest.cli.check import print_config_warnings
from digest.cli.common import db, links, print_table, schedule


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


@click.command("run")
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
        from digest.web_server import listen

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


@click.command("serve")
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
    from digest.web import create_app
    from digest.web_server import serve

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


@click.command("status")
@click.pass_obj
def status_command(app: App) -> None:
    """Show the scheduler's next runs, the last results, who is due soon, and problems.

    Also how many planned digests wait to be sent, per date. Problems are deliveries
    deferred, unknown or in flight, and those that failed (with the reply and whether
    the address bounced) in the last 24 hours.

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
        queued = db.queued_by_date(session)
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
        elif job == "ingest" and when is None:
            click.echo(f"  {job:<9} not scheduled: no [schedule] sources in the config")
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
    # Planned rows not sent yet (a send that stopped, or digests planned before their
    # hour): sent at their subscriber's hour by `digest run`, or now by `digest send`.
    waiting = ", ".join(f"{count} for {day}" for day, count in queued)
    click.echo(
        f"queued, not sent yet: {sum(count for _, count in queued)}"
        + (f" ({waiting})" if waiting else "")
    )
    click.echo(f"deferred, unknown, in flight, or failed in the last 24 h: {len(problem_rows)}")
    if problem_rows:
        print_table(("email", "date", "status", "attempts", "last reply"), problem_rows)
