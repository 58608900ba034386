"""Deliverability check: what a real sender needs, as a short list of findings.

Each check takes plain values and returns `Finding`s, (level, message) pairs
with level "ok", "warn" or "info", so every entry point can reuse them:
`digest check` prints them all, `digest send` and `digest run` print the
warnings of `config_findings` once at start, and the web front checks
`check_base_url` at start-up. Only `check_smtp` (a TCP connection to the
configured server) and `check_dns` (a DNS lookup, skipped when offline) touch
the network.

    for level, message in config_findings(config):
        print(level, message)
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

from digest.app import GENERATE_KEY_HINT, MIN_SECRET_KEY_BYTES
from digest.config import Config, MailConfig, SmtpConfig
from digest.transport import not_offered

Level = Literal["ok", "warn", "info"]

# Domains that never reach anyone (RFC 2606, RFC 6761) or only this machine.
LOCAL_SUFFIXES = ("localhost", "localdomain", "local", "internal", "test", "invalid", "example")
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
STRONG_DKIM_BITS = 2048
MIN_DKIM_BITS = 1024
# Characters a random signing key of MIN_SECRET_KEY_BYTES shows at the very least.
MIN_KEY_DISTINCT = 10
TXT_CHUNK = 250  # a DNS TXT string holds at most 255 bytes
DNS_PROBE = "gmail.com"  # a name with TXT records wherever DNS works


class Finding(NamedTuple):
    level: Level
    message: str


def ok(message: str) -> Finding:
    return Finding("ok", message)


def warn(message: str) -> Finding:
    return Finding("warn", message)


def info(message: str) -> Finding:
    return Finding("info", message)


def is_local_host(host: str) -> bool:
    """A host name or address that only this machine (or no one) can reach."""
    name = host.strip("[]").rstrip(".").casefold()
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(name)
        return address.is_loopback or address.is_unspecified or address.is_link_local
    labels = name.split(".")
    return (
        "." not in name
        or labels[-1] in LOCAL_SUFFIXES
        or any(name == d or name.endswith("." + d) for d in EXAMPLE_DOMAINS)
    )


def check_from_address(mail: MailConfig) -> list[Finding]:
    domain = mail.from_address.rpartition("@")[2]
    if is_local_host(domain):
        return [
            warn(
                f"mail.from_address {mail.from_address} is on a local or reserved domain: "
                "receivers reject or junk its mail; use an address on a domain you control"
            )
        ]
    return [ok(f"mail.from_address {mail.from_address}")]


def check_postal_address(mail: MailConfig) -> list[Finding]:
    if not mail.postal_address.strip():
        return [
            warn(
                "mail.postal_address is empty: CAN-SPAM and the Gmail and Yahoo bulk-sender "
                "rules ask for a postal address in every email's footer"
            )
        ]
    return [ok("mail.postal_address is set")]


def check_base_url(base_url: str) -> list[Finding]:
    """The public base URL of the links in every email (unsubscribe, manage, view)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    found = []
    if is_local_host(host):
        found.append(
            warn(
                f"site.base_url {base_url} is not reachable by readers: the unsubscribe, "
                "preferences and view-in-browser links in every email point to it"
            )
        )
    if parts.scheme != "https":
        found.append(
            warn(
                f"site.base_url {base_url} is not https: one-click unsubscribe (RFC 8058) "
                "needs an https URL, and mail clients flag plain http links"
            )
        )
    return found or [ok(f"site.base_url {base_url}")]


def check_signing_key(key: str | None, generated: Path) -> list[Finding]:
    """The key that signs unsubscribe and preference links.

    `key` is `site.secret_key`; without it, the key generated once into `generated`.
    """
    if key is None:
        if not generated.exists():
            return [info(f"no site.secret_key: a random one is generated into {generated}")]
        try:
            key = generated.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return [warn(f"cannot read the signing key {generated}: {exc}")]
        where = str(generated)
    else:
        where = "site.secret_key"
    if len(key.encode("utf-8")) < MIN_SECRET_KEY_BYTES:
        return [
            warn(
                f"{where} is shorter than {MIN_SECRET_KEY_BYTES} bytes: links can be forged; "
                f"generate one with: {GENERATE_KEY_HINT}"
            )
        ]
    if len(set(key)) < MIN_KEY_DISTINCT:
        return [
            warn(
                f"{where} has only {len(set(key))} distinct characters: it does not look "
                f"random; generate one with: {GENERATE_KEY_HINT}"
            )
        ]
    return [ok(f"the signing key ({where}) is {len(key.encode('utf-8'))} bytes long")]


@dataclass(frozen=True)
class DkimKey:
    """A DKIM private key and the DNS record that publishes its public half."""

    selector: str
    domain: str
    private_pem: bytes
    algorithm: str  # "rsa" or "ed25519"
    bits: int
    public: str  # base64, the p= of the record

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record(self) -> str:
        return f"v=DKIM1; k={self.algorithm}; p={self.public}"

    @property
    def zone_line(self) -> str:
        """The record as a zone-file line, in TXT strings of at most 255 bytes."""
        text = self.record
        chunks = " ".join(f'"{text[i : i + TXT_CHUNK]}"' for i in range(0, len(text), TXT_CHUNK))
        return f"{self.record_name}. IN TXT ( {chunks} )"


def load_dkim_key(selector: str, domain: str, pem: bytes) -> DkimKey:
    """Parse a PEM private key (RSA or Ed25519); ValueError if it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return DkimKey(
            selector, domain, pem, "rsa", key.key_size, base64.b64encode(public).decode()
        )
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return DkimKey(selector, domain, pem, "ed25519", 256, base64.b64encode(raw).decode())
    raise ValueError(f"a {type(key).__name__[1:] or 'key'} cannot sign DKIM (RSA or Ed25519)")


def dkim_signs(key: DkimKey) -> bool:
    """Whether a message signed with the key verifies against its own DNS record."""
    import dkim

    message = EmailMessage()
    message["From"] = f"check@{key.domain}"
    message["To"] = f"check@{key.domain}"
    message["Subject"] = "DKIM check"
    message["Date"] = format_datetime(datetime(2026, 1, 1, tzinfo=UTC))
    message.set_content("DKIM check\n")
    raw = message.as_bytes()
    signature = dkim.sign(
        raw,
        key.selector.encode(),
        key.domain.encode(),
        key.private_pem,
        include_headers=[b"from", b"to", b"subject", b"date"],
        signature_algorithm=b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256",
    )
    record = key.record.encode()
    return bool(dkim.verify(signature + raw, dnsfunc=lambda name, timeout=5: record))


def check_dkim(mail: MailConfig) -> tuple[list[Finding], DkimKey | None]:
    """The DKIM key: configured, readable, strong, signing; and its DNS record to publish."""
    if not mail.dkim_selector or not mail.dkim_key_file:
        return [
            warn(
                "no DKIM key (mail.dkim_selector, mail.dkim_key_file): Gmail and Yahoo "
                "require DKIM from bulk senders; generate one with: "
                "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dkim.pem"
            )
        ], None
    path = mail.dkim_key_file
    try:
        pem = path.read_bytes()
    except OSError as exc:
        return [warn(f"mail.dkim_key_file {path}: cannot read it: {exc.strerror or exc}")], None
    domain = mail.from_address.rpartition("@")[2]
    try:
        key = load_dkim_key(mail.dkim_selector, domain, pem)
    except (ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [warn(f"mail.dkim_key_file {path}: not a usable PEM private key ({reason})")], None
    found = []
    if key.algorithm == "rsa" and key.bits < MIN_DKIM_BITS:
        found.append(
            warn(f"the DKIM key is {key.bits}-bit RSA: receivers ignore keys under 1024 bits")
        )
    elif key.algorithm == "rsa" and key.bits < STRONG_DKIM_BITS:
        found.append(warn(f"the DKIM key is {key.bits}-bit RSA: use 2048 bits"))
    try:
        verifies = dkim_signs(key)
    except Exception as exc:  # dkimpy's errors have no common base (e.g. no PyNaCl for ed25519)
        found.append(warn(f"mail.dkim_key_file {path}: dkimpy cannot sign with it ({exc})"))
    else:
        if not verifies:
            found.append(warn(f"mail.dkim_key_file {path}: a signed message does not verify"))
    if not found:
        found.append(
            ok(f"DKIM key {path}: {key.algorithm} {key.bits}-bit, selector {key.selector}")
        )
    found.append(info(f"publish the DKIM key in DNS: {key.zone_line}"))
    return found, key


TxtLookup = Callable[[str], Sequence[str]]


class DnsUnavailable(Exception):
    """No DNS server answered: the DNS checks are skipped."""


def resolver_lookup(timeout: float = 3.0, nameservers: Sequence[str] = ()) -> TxtLookup:
    """TXT lookups through dnspython; [] when the name or record does not exist."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = list(nameservers)
    resolver.lifetime = timeout

    def lookup(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DnsUnavailable(str(exc)) from None
        return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]

    return lookup


def check_dns(domain: str, dkim: DkimKey | None, lookup: TxtLookup) -> list[Finding]:
    """SPF, DMARC and the published DKIM key of the From domain; skipped when offline."""
    if is_local_host(domain):
        return [info(f"DNS checks skipped: {domain} is a local or reserved domain")]
    try:
        if not lookup(DNS_PROBE):  # a resolver that knows nothing: offline or sandboxed
            return [info(f"DNS checks skipped: the resolver does not know {DNS_PROBE}")]
        spf = [t for t in lookup(domain) if t.casefold().startswith("v=spf1")]
        dmarc = [t for t in lookup(f"_dmarc.{domain}") if t.casefold().startswith("v=dmarc1")]
        published = lookup(dkim.record_name) if dkim else []
    except DnsUnavailable as exc:
        return [info(f"DNS checks skipped: no DNS server answered ({exc})")]
    found = [
        ok(f"SPF record of {domain}: {spf[0]}")
        if spf
        else warn(f"no SPF record (TXT v=spf1) on {domain}: receivers cannot check the sender"),
        ok(f"DMARC record of {domain}: {dmarc[0]}")
        if dmarc
        else warn(f"no DMARC record (TXT v=DMARC1) at _dmarc.{domain}: bulk senders need one"),
    ]
    if dkim is not None:
        keys = {
            part.strip()[2:].replace(" ", "")
            for text in published
            for part in text.split(";")
            if part.strip().startswith("p=")
        }
        if dkim.public in keys:
            found.append(ok(f"the DKIM key is published at {dkim.record_name}"))
        elif keys:
            found.append(warn(f"{dkim.record_name} publishes a different DKIM key"))
        else:
            found.append(warn(f"the DKIM key is not published at {dkim.record_name}"))
    return found


def check_smtp(settings: SmtpConfig, context: ssl.SSLContext | None = None) -> list[Finding]:
    """Connect to the configured SMTP server with its TLS mode, and log in if configured."""
    host = settings.host or "localhost"
    where = f"{host}:{settings.port}"
    found = []
    if not settings.ssl and not settings.starttls:
        found.append(
            warn(
                f"SMTP {where} without TLS (smtp.starttls and smtp.ssl are off): "
                "mail and password travel in clear"
            )
        )
    context = context or ssl.create_default_context()
    client: smtplib.SMTP | None = None
    try:
        if settings.ssl:
            client = smtplib.SMTP_SSL(
                host, settings.port, timeout=settings.timeout, context=context
            )
            mode = "implicit TLS, certificate verified"
        else:
            client = smtplib.SMTP(host, settings.port, timeout=settings.timeout)
            client.ehlo()
            mode = "no TLS"
            if settings.starttls:
                if not client.has_extn("starttls"):
                    return [*found, warn(not_offered(where, "STARTTLS", tls=False))]
                client.starttls(context=context)
                mode = "STARTTLS, certificate verified"
        if settings.username:
            client.login(settings.username, settings.password or "")
            mode += f", logged in as {settings.username}"
        found.append(ok(f"SMTP {where} answers ({mode})"))
    except smtplib.SMTPAuthenticationError as exc:
        found.append(warn(f"SMTP {where} refused the login: {exc.smtp_code} {exc.smtp_error!r}"))
    except (ssl.SSLError, ssl.CertificateError) as exc:
        found.append(warn(f"TLS with SMTP {where} failed: {exc}"))
    except smtplib.SMTPNotSupportedError as exc:
        found.append(warn(not_offered(where, exc, settings.ssl or settings.starttls)))
    except (OSError, smtplib.SMTPException) as exc:
        found.append(warn(f"cannot reach SMTP {where}: {exc}"))
    finally:
        if client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
    return found


def config_check(config: Config) -> tuple[list[Finding], DkimKey | None]:
    """Every check that needs neither the network nor the database, and the DKIM key."""
    dkim_found, dkim_key = check_dkim(config.mail)
    findings = [
        *check_from_address(config.mail),
        *check_postal_address(config.mail),
        *check_base_url(config.site.base_url),
        *dkim_found,
        *check_signing_key(config.site.secret_key, config.data_dir / "secret_key"),
    ]
    return findings, dkim_key


def config_findings(config: Config) -> list[Finding]:
    return config_check(config)[0]


def warnings(findings: Sequence[Finding]) -> list[str]:
    return [message for level, message in findings if level == "warn"]
