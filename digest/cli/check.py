"""`digest check`: what a real sender needs for digests to arrive, and the
configuration warnings that `digest send` and `digest run` print when they start."""

from __future__ import annotations

import click

from digest.app import App
from digest.cli.common import doctor


def print_config_warnings(app: App) -> None:
    """The deliverability warnings, once at the start of a real (SMTP) send or run."""
    if app.config.delivery.transport != "smtp":
        return
    for message in doctor.warnings(doctor.config_findings(app.config)):
        click.echo(f"warning: {message}", err=True)


@click.command("check")
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
