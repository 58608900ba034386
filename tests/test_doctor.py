"""The deliverability check: each rule, the DKIM record, DNS, a real SMTP server, the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from digest.config import MailConfig, SmtpConfig
from digest.doctor import (
    DNS_PROBE,
    DnsUnavailable,
    Finding,
    check_base_url,
    check_dkim,
    check_dns,
    check_from_address,
    check_postal_address,
    check_signing_key,
    check_smtp,
    load_dkim_key,
    resolver_lookup,
)
from tests.smtp_server import SmtpServer, free_port, tls_contexts

GOOD_KEY = "Jq3v9xWm2LkP0s8ZtR4yN6bC1dF5gH7aE-_uQwXeYzV"


def mail(**fields) -> MailConfig:
    values = dict(
        from_address="digest@papers.digest.dev",
        from_name="Papers Digest",
        reply_to=None,
        postal_address="Papers Digest, 1 Rue Exemple, 75001 Paris",
    )
    values.update(fields)
    return MailConfig(**values)


def pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def levels(findings: list[Finding]) -> list[str]:
    return [finding.level for finding in findings]


@pytest.mark.parametrize(
    ("address", "level"),
    [
        ("digest@localhost.localdomain", "warn"),
        ("digest@localhost", "warn"),
        ("digest@papers.example.org", "warn"),
        ("digest@mail.test", "warn"),
        ("digest@papers.digest.dev", "ok"),
    ],
)
def test_from_domain(address: str, level: str) -> None:
    [finding] = check_from_address(mail(from_address=address))
    assert finding.level == level
    assert address in finding.message


def test_postal_address() -> None:
    assert levels(check_postal_address(mail())) == ["ok"]
    [missing] = check_postal_address(mail(postal_address="  "))
    assert missing == Finding(
        "warn",
        "mail.postal_address is empty: CAN-SPAM and the Gmail and Yahoo bulk-sender rules "
        "ask for a postal address in every email's footer",
    )


@pytest.mark.parametrize(
    ("url", "warnings"),
    [
        ("http://localhost:8000", ["not reachable", "not https"]),
        ("https://127.0.0.1", ["not reachable"]),
        ("https://[::1]:8443", ["not reachable"]),
        ("https://digest.local", ["not reachable"]),
        ("http://papers.digest.dev", ["not https"]),
        ("https://papers.digest.dev", []),
    ],
)
def test_base_url(url: str, warnings: list[str]) -> None:
    found = check_base_url(url)
    if not warnings:
        assert found == [Finding("ok", f"site.base_url {url}")]
    else:
        assert levels(found) == ["warn"] * len(warnings)
        assert [w in f.message for w, f in zip(warnings, found, strict=True)] == [True] * len(
            warnings
        )


def test_signing_key(tmp_path: Path) -> None:
    generated = tmp_path / "secret_key"
    assert check_signing_key(None, generated) == [
        Finding("info", f"no site.secret_key: a random one is generated into {generated}")
    ]
    generated.write_text(GOOD_KEY + "\n", encoding="utf-8")
    assert check_signing_key(None, generated) == [
        Finding("ok", f"the signing key ({generated}) is 43 bytes long")
    ]
    assert levels(check_signing_key(GOOD_KEY, generated)) == ["ok"]
    [short] = check_signing_key("use DIGEST_SECRET_KEY instead", generated)
    assert short.level == "warn" and short.message.startswith(
        "site.secret_key is shorter than 32 bytes: links can be forged; generate one with: "
    )
    [repetitive] = check_signing_key("ab" * 20, generated)
    assert repetitive.level == "warn" and "only 2 distinct characters" in repetitive.message


def test_dkim_key_record_and_strength(tmp_path: Path) -> None:
    [missing], none = check_dkim(mail())
    assert none is None and missing.level == "warn" and "no DKIM key" in missing.message
    key_file = tmp_path / "dkim.pem"
    configured = mail(dkim_selector="d1", dkim_key_file=key_file)
    [unreadable], _ = check_dkim(configured)
    assert unreadable.level == "warn" and "cannot read it" in unreadable.message
    key_file.write_text("not a key", encoding="utf-8")
    [garbage], _ = check_dkim(configured)
    assert garbage.level == "warn" and "not a usable PEM private key" in garbage.message

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(pem(private))
    found, key = check_dkim(configured)
    assert levels(found) == ["ok", "info"]
    assert found[0].message == f"DKIM key {key_file}: rsa 2048-bit, selector d1"
    assert key is not None and key.record_name == "d1._domainkey.papers.digest.dev"
    # The printed record is the key's public half, in TXT strings of at most 255 bytes.
    zone = found[1].message.removeprefix("publish the DKIM key in DNS: ")
    assert zone.startswith('d1._domainkey.papers.digest.dev. IN TXT ( "v=DKIM1; k=rsa; p=')
    strings = re.findall(r'"([^"]*)"', zone)
    assert [len(s) for s in strings] == [250, len(key.record) - 250]
    record = "".join(strings)
    assert record == key.record
    # ...and a message signed as digests are verifies against that record.
    message = b"From: digest@papers.digest.dev\r\nTo: a@b.org\r\nSubject: x\r\n\r\nbody\r\n"
    signed = dkim.sign(message, b"d1", b"papers.digest.dev", pem(private))
    assert dkim.verify(signed + message, dnsfunc=lambda name, timeout=5: record.encode())

    key_file.write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    weak, _ = check_dkim(configured)
    assert weak[0] == Finding("warn", "the DKIM key is 1024-bit RSA: use 2048 bits")


def test_ed25519_dkim_key() -> None:
    key = load_dkim_key("ed", "papers.digest.dev", pem(ed25519.Ed25519PrivateKey.generate()))
    assert (key.algorithm, key.bits, len(key.public)) == ("ed25519", 256, 44)
    assert key.record.startswith("v=DKIM1; k=ed25519; p=")


def test_dns_records_of_the_from_domain(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = load_dkim_key("d1", "papers.digest.dev", pem(private))
    zone = {
        DNS_PROBE: ["v=spf1 redirect=_spf.google.com"],
        "papers.digest.dev": ["google-site-verification=x", "v=spf1 include:_spf.mx.dev -all"],
        "_dmarc.papers.digest.dev": ["v=DMARC1; p=quarantine"],
        "d1._domainkey.papers.digest.dev": [key.record],
    }
    assert check_dns("papers.digest.dev", key, lambda name: zone.get(name, [])) == [
        Finding("ok", "SPF record of papers.digest.dev: v=spf1 include:_spf.mx.dev -all"),
        Finding("ok", "DMARC record of papers.digest.dev: v=DMARC1; p=quarantine"),
        Finding("ok", "the DKIM key is published at d1._domainkey.papers.digest.dev"),
    ]
    zone["d1._domainkey.papers.digest.dev"] = ["v=DKIM1; k=rsa; p=MIIBold"]
    del zone["_dmarc.papers.digest.dev"]
    found = check_dns("papers.digest.dev", key, lambda name: zone.get(name, []))
    assert [f.message for f in found if f.level == "warn"] == [
        "no DMARC record (TXT v=DMARC1) at _dmarc.papers.digest.dev: bulk senders need one",
        "d1._domainkey.papers.digest.dev publishes a different DKIM key",
    ]
    # Offline: a resolver that knows nothing, or no DNS server at all, skips the checks.
    assert levels(check_dns("papers.digest.dev", key, lambda name: [])) == ["info"]
    closed = resolver_lookup(timeout=2.0, nameservers=["127.0.0.1"])
    with pytest.raises(DnsUnavailable):
        closed("papers.digest.dev")
    [skipped] = check_dns("papers.digest.dev", key, closed)
    assert skipped.level == "info" and skipped.message.startswith("DNS checks skipped")
    assert check_dns("localhost.localdomain", None, closed) == [
        Finding("info", "DNS checks skipped: localhost.localdomain is a local or reserved domain")
    ]


def smtp_config(port: int, **fields) -> SmtpConfig:
    values = dict(
        host="127.0.0.1",
        port=port,
        username=None,
        password=None,
        starttls=False,
        ssl=False,
        timeout=5.0,
    )
    values.update(fields)
    return SmtpConfig(**values)


def test_smtp_reachable_with_starttls_and_login() -> None:
    server_context, client_context = tls_contexts()
    with SmtpServer(tls_context=server_context, credentials=("digest", "s3cret")) as server:
        good = smtp_config(server.port, starttls=True, username="digest", password="s3cret")
        assert check_smtp(good, client_context) == [
            Finding(
                "ok",
                f"SMTP 127.0.0.1:{server.port} answers "
                "(STARTTLS, certificate verified, logged in as digest)",
            )
        ]
        [refused] = check_smtp(
            smtp_config(server.port, starttls=True, username="digest", password="wrong"),
            client_context,
        )
        assert refused.level == "warn" and refused.message.startswith(
            f"SMTP 127.0.0.1:{server.port} refused the login: 535"
        )
        [untrusted] = check_smtp(good)  # the system's CAs do not trust this certificate
        assert untrusted.level == "warn" and untrusted.message.startswith(
            f"TLS with SMTP 127.0.0.1:{server.port} failed"
        )
    assert server.handler.messages == []


def test_smtp_without_auth_for_a_username_says_so() -> None:
    with SmtpServer() as server:
        found = check_smtp(smtp_config(server.port, username="digest", password="s3cret"))
    assert found[1] == Finding(
        "warn",
        f"SMTP server 127.0.0.1:{server.port} does not offer AUTH (login), but smtp.username "
        "is set: set smtp.starttls = true if it takes logins only over TLS (most servers), "
        "or unset it",
    )


def test_smtp_without_tls_or_unreachable() -> None:
    with SmtpServer() as server:
        plain = check_smtp(smtp_config(server.port))
        assert levels(plain) == ["warn", "ok"]
        assert "without TLS" in plain[0].message
        assert plain[1].message == f"SMTP 127.0.0.1:{server.port} answers (no TLS)"
        [no_starttls] = check_smtp(smtp_config(server.port, starttls=True))
        assert no_starttls == Finding(
            "warn",
            f"SMTP server 127.0.0.1:{server.port} does not offer STARTTLS: set smtp.ssl = "
            "true if it speaks TLS from the start (port 465), or smtp.starttls = false for a "
            "server without TLS",
        )
    port = free_port()
    [down] = check_smtp(smtp_config(port, starttls=True))
    assert down.level == "warn" and down.message.startswith(f"cannot reach SMTP 127.0.0.1:{port}")


def write_config(tmp_path: Path, smtp_port: int, more: str) -> Path:
    """A config sending over plain SMTP to a local test server, plus `more` TOML."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nstarttls = false\n{more}',
        encoding="utf-8",
    )
    return path


def test_check_command_lists_every_misconfiguration(cli, tmp_path: Path) -> None:
    result = cli("check", "--no-dns")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [
        "warn",
        "warn",
        "warn",
        "warn",
        "warn",
        "info",
        "info",
    ]
    assert "mail.from_address digest@localhost.localdomain" in lines[0]
    assert "mail.postal_address is empty" in lines[1]
    assert "site.base_url http://localhost:8000 is not reachable" in lines[2]
    assert "site.base_url http://localhost:8000 is not https" in lines[3]
    assert "no DKIM key" in lines[4]
    assert "no site.secret_key: a random one is generated into" in lines[5]
    assert "digests go to the Maildir outbox" in lines[6]
    assert lines[-1] == "5 warnings"
    assert not (tmp_path / "data").exists()  # checking creates nothing


def test_check_command_passes_a_sound_configuration(cli, tmp_path: Path, monkeypatch) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    with SmtpServer() as server:
        config = write_config(
            tmp_path,
            server.port,
            f"""
[mail]
from_address = "digest@papers.digest.dev"
postal_address = "Papers Digest, 1 Rue Exemple, 75001 Paris"
dkim_selector = "d1"
dkim_key_file = "{key_file}"
[site]
base_url = "https://papers.digest.dev"
secret_key = "{GOOD_KEY}"
""",
        )
        monkeypatch.setenv("DIGEST_CONFIG", str(config))
        result = cli("check", "--no-dns")
        assert result.exit_code == 1  # SMTP without TLS is the one warning left
        assert result.output.count("\nwarn ") == 1 and result.output.endswith("1 warning\n")
        skipped = cli("check", "--no-dns", "--no-smtp")
    assert skipped.exit_code == 0, skipped.output
    assert [line.split()[0] for line in skipped.output.splitlines()] == [
        "ok",
        "ok",
        "ok",
        "ok",
        "info",
        "ok",
    ]
    assert "publish the DKIM key in DNS: d1._domainkey.papers.digest.dev. IN TXT" in skipped.output


def test_send_prints_the_configuration_warnings_once(cli, tmp_path: Path, monkeypatch) -> None:
    with SmtpServer() as server:
        config = write_config(tmp_path, server.port, f'[site]\nsecret_key = "{GOOD_KEY}"\n')
        monkeypatch.setenv("DIGEST_CONFIG", str(config))
        result = cli("send")
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 5
    assert warnings[0].startswith("warning: mail.from_address digest@localhost.localdomain")
    assert result.output.splitlines()[-1] == "sent 0, empty 0, deferred 0, failed 0, unknown 0"
    # The Maildir outbox reaches no one: no deliverability warnings there.
    monkeypatch.delenv("DIGEST_CONFIG")
    assert "warning:" not in cli("send").output
