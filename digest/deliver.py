"""Deliver stage: build each recipient's MIME message and hand it to a transport.

* `DigestMailer` renders each distinct digest once (`digest.render`) and
  personalizes a copy per subscriber: greeting, signed links, headers.
* `build_message` makes the multipart/alternative message: From with a
  display name, Reply-To, To, Subject, Date, a deterministic Message-ID per
  subscriber and date, List-Id, List-Unsubscribe (+ One-Click POST, RFC 8058)
  and optional DKIM. No header can be injected: CR/LF never reach one.
* Transports share one small interface (`send(message) -> reply`, `close()`):
  `SmtpTransport`, `MaildirTransport` (the default outbox) and `MemoryTransport`.
"""

from __future__ import annotations

import contextlib
import hashlib
import mailbox
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol

from digest.config import MailConfig, SmtpConfig
from digest.links import subscriber_links
from digest.models import Paper, Subscriber
from digest.render import ItemLike, Recipient, RenderedDigest, Renderer, one_line, topic_title

# Unfolded headers (RFC 5322 allows 998 characters) keep the unsubscribe URL on one line.
MAIL_POLICY = policy.SMTP.clone(max_line_length=998)
DKIM_HEADERS = (b"from", b"to", b"subject", b"date", b"list-unsubscribe", b"list-unsubscribe-post")


class DeliveryError(Exception):
    """A message was not delivered. `reply` is the server's answer, when there was one."""

    def __init__(self, message: str, reply: str | None = None) -> None:
        super().__init__(message)
        self.reply = reply or message


class TemporaryFailure(DeliveryError):
    """A 4xx reply or a dropped connection: try this recipient again later."""


class PermanentFailure(DeliveryError):
    """A 5xx reply for this recipient: do not try again, mark the address bounced."""


class FatalTransportError(DeliveryError):
    """The sender's problem (refused connection, TLS, authentication, policy): stop the run."""


class Transport(Protocol):
    def send(self, message: EmailMessage) -> str: ...

    def close(self) -> None: ...


@dataclass
class MemoryTransport:
    """Keeps messages in a list; for tests and dry runs."""

    messages: list[EmailMessage] = field(default_factory=list)

    def send(self, message: EmailMessage) -> str:
        self.messages.append(message)
        return "250 stored in memory"

    def close(self) -> None:
        pass


@dataclass
class MaildirTransport:
    """Delivers into a standard Maildir (cur/new/tmp) that any mail client can open."""

    path: Path

    def send(self, message: EmailMessage) -> str:
        box = mailbox.Maildir(self.path, create=True)
        key = box.add(message.as_bytes(policy=MAIL_POLICY))
        return f"250 stored in {self.path / 'new' / key}"

    def close(self) -> None:
        pass


def _reply_text(code: int, text: bytes | str) -> str:
    body = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return one_line(f"{code} {body}")


@dataclass
class SmtpTransport:
    """SMTP with implicit TLS or STARTTLS, AUTH, timeouts, connection reuse and a rate limit.

    One connection carries up to `max_per_connection` messages; a connection
    that drops is reopened once for the message in hand.
    """

    settings: SmtpConfig
    max_per_connection: int = 100
    rate: float | None = None  # messages per second
    ssl_context: ssl.SSLContext | None = None
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _client: smtplib.SMTP | None = field(default=None, init=False, repr=False)
    _sent_on_connection: int = field(default=0, init=False)
    _last_send: float | None = field(default=None, init=False)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        assert s.host, "SMTP transport without a host"
        context = self.ssl_context or ssl.create_default_context()
        try:
            client: smtplib.SMTP
            if s.ssl:
                client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.starttls:
                    client.starttls(context=context)
            if s.username:
                client.login(s.username, s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise FatalTransportError(
                f"SMTP authentication failed: {_reply_text(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise FatalTransportError(f"SMTP server does not support {exc}") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise FatalTransportError(f"TLS with {s.host}:{s.port} failed: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            raise FatalTransportError(
                f"SMTP server {s.host}:{s.port} refused us: "
                f"{_reply_text(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise FatalTransportError(f"cannot connect to SMTP {s.host}:{s.port}: {exc}") from None
        self._sent_on_connection = 0
        return client

    def _pace(self) -> None:
        if self.rate and self._last_send is not None:
            wait = 1.0 / self.rate - (self.monotonic() - self._last_send)
            if wait > 0:
                self.sleep(wait)
        self._last_send = self.monotonic()

    def _deliver(self, message: EmailMessage) -> str:
        if self._client is None or self._sent_on_connection >= self.max_per_connection:
            self.close()
            self._client = self._connect()
        refused = self._client.send_message(message)
        self._sent_on_connection += 1
        if refused:
            code, text = next(iter(refused.values()))
            raise (TemporaryFailure if 400 <= code < 500 else PermanentFailure)(
                "recipient refused", _reply_text(code, text)
            )
        return "250 accepted"

    def send(self, message: EmailMessage) -> str:
        self._pace()
        for attempt in (1, 2):
            try:
                return self._deliver(message)
            except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                self._client = None
                if attempt == 2:
                    raise TemporaryFailure(f"connection lost: {exc}") from None
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                error = TemporaryFailure if 400 <= code < 500 else PermanentFailure
                raise error("recipient refused", _reply_text(code, text)) from None
            except smtplib.SMTPResponseException as exc:
                reply = _reply_text(exc.smtp_code, exc.smtp_error)
                if reply.split(" ", 2)[1:2] and reply.split(" ", 2)[1].startswith("5.7"):
                    raise FatalTransportError(f"SMTP policy refusal: {reply}", reply) from None
                if 400 <= exc.smtp_code < 500:
                    raise TemporaryFailure("temporary failure", reply) from None
                raise PermanentFailure("rejected", reply) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._client.quit()
            self._client = None


def message_id(subscriber: Subscriber, digest_date: date, domain: str) -> str:
    """Deterministic per subscriber and date, so a duplicate is traceable."""
    tag = hashlib.sha256(f"{subscriber.id}:{subscriber.secret}".encode()).hexdigest()[:10]
    return f"<digest.{digest_date:%Y%m%d}.{subscriber.id}.{tag}@{domain}>"


@dataclass(frozen=True)
class Dkim:
    """A DKIM key: `selector._domainkey.domain` publishes the public half."""

    selector: str
    domain: str
    private_key: bytes


def build_message(
    *,
    mail: MailConfig,
    to: str,
    subject: str,
    html: str,
    text: str,
    msgid: str,
    sent_at: datetime,
    unsubscribe_url: str,
    dkim: Dkim | None = None,
) -> EmailMessage:
    """The complete multipart/alternative message for one recipient."""
    domain = mail.from_address.rpartition("@")[2]
    # Bodies are encoded under the SMTP policy (quoted-printable lines of at most 76
    # characters); headers are then generated unfolded under MAIL_POLICY.
    message = EmailMessage(policy=policy.SMTP)
    sender = Address(display_name=one_line(mail.from_name), addr_spec=mail.from_address)
    message["From"] = sender
    message["To"] = Address(addr_spec=one_line(to))
    if mail.reply_to:
        message["Reply-To"] = Address(addr_spec=mail.reply_to)
    message["Subject"] = one_line(subject)
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = msgid
    message["List-Id"] = f"{one_line(mail.from_name)} <digest.{domain}>"
    targets = [f"<{unsubscribe_url}>"]
    if mail.unsubscribe_mailto:
        targets.append(f"<mailto:{mail.unsubscribe_mailto}?subject=unsubscribe>")
    message["List-Unsubscribe"] = ", ".join(targets)
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    message.policy = MAIL_POLICY
    if dkim is not None:
        sign_dkim(message, dkim)
    return message


def sign_dkim(message: EmailMessage, key: Dkim) -> None:
    """Add a DKIM-Signature over From, To, Subject, Date and the List-Unsubscribe headers."""
    import dkim as dkimpy

    signature = dkimpy.sign(
        message.as_bytes(policy=MAIL_POLICY),
        key.selector.encode(),
        key.domain.encode(),
        key.private_key,
        include_headers=list(DKIM_HEADERS),
    )
    name, _, value = signature.decode().partition(":")
    message[name] = " ".join(value.split())


@dataclass
class DigestMailer:
    """Turns a digest into each recipient's message, rendering each distinct content once."""

    renderer: Renderer
    mail: MailConfig
    base_url: str
    secret_key: str
    dkim: Dkim | None = None
    renders: int = 0
    _cache: dict[tuple[str, bool], RenderedDigest] = field(default_factory=dict, repr=False)

    def rendered(
        self,
        key: str,
        items: Sequence[ItemLike],
        papers: dict[int, Paper],
        digest_date: date,
        weekly: bool,
    ) -> RenderedDigest:
        """The rendering of content `key` (e.g. the digest's content hash), made once."""
        if (key, weekly) not in self._cache:
            self.renders += 1
            self._cache[key, weekly] = self.renderer.render(
                items, papers, digest_date=digest_date, weekly=weekly
            )
        return self._cache[key, weekly]

    def recipient(self, subscriber: Subscriber, digest_date: date) -> Recipient:
        links = subscriber_links(
            self.base_url, self.secret_key, subscriber.id, subscriber.secret, digest_date
        )
        return Recipient(
            email=subscriber.email,
            topics=[topic_title(t.query, t.label) for t in subscriber.topics],
            unsubscribe_url=links.unsubscribe,
            manage_url=links.manage,
            view_url=links.view,
        )

    def message(
        self,
        subscriber: Subscriber,
        rendered: RenderedDigest,
        digest_date: date,
        sent_at: datetime,
    ) -> EmailMessage:
        recipient = self.recipient(subscriber, digest_date)
        html, text = rendered.personalize(recipient)
        domain = self.mail.from_address.rpartition("@")[2]
        return build_message(
            mail=self.mail,
            to=subscriber.email,
            subject=rendered.subject,
            html=html,
            text=text,
            msgid=message_id(subscriber, digest_date, domain),
            sent_at=sent_at,
            unsubscribe_url=recipient.unsubscribe_url,
            dkim=self.dkim,
        )
