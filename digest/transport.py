"""Transports: hand one finished message to an SMTP server, a Maildir or a list.

Every transport has `send(message) -> reply`, `close()` and `in_doubt()`, and
reports a failure as one of four errors, which the sender (`digest.deliver`)
turns into the delivery's ledger status:

* `TemporaryFailure`: a 4xx reply for this recipient, or the connection lost
  twice before the end of the message body reached the server (so nothing can
  have been delivered): try again later.
* `PermanentFailure`: a 5xx reply for this recipient, or a message this server
  cannot carry (a non-ASCII local part without SMTPUTF8). `bounce` says whether
  the server refused the address itself (5.1.x, 5.2.1), which stops further
  digests to it; policy and content refusals do not bounce.
* `UnknownOutcome`: the whole body was sent but no final reply came (dropped
  connection, timeout, garbage): the message may have been delivered, so it is
  never resent automatically.
* `FatalTransportError`: a problem of the session, not of the recipient
  (connection refused, TLS, AUTH, the sender refused at MAIL FROM, 421): the
  run stops, and the message in hand was not delivered.

Failures that may concern the whole session carry a `hint`; the sender stops
the run when the same hint comes back for several recipients in a row.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import mailbox
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from digest.config import SmtpConfig
from digest.sources.records import one_line


class DeliveryError(Exception):
    """A message was not delivered. `reply` is the server's answer, when there was one.

    `hint` is set when the failure may be the session's rather than the recipient's:
    the same hint for several recipients in a row means the session is blocked.
    """

    def __init__(self, message: str, reply: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.reply = one_line(reply or message)[:500]
        self.hint = hint


class TemporaryFailure(DeliveryError):
    """A 4xx reply, or the connection lost before the message was complete: retry later."""


class PermanentFailure(DeliveryError):
    """A 5xx reply for this recipient, or a message the server cannot carry: do not retry."""

    def __init__(
        self, message: str, reply: str | None = None, hint: str | None = None, bounce: bool = False
    ) -> None:
        super().__init__(message, reply, hint)
        self.bounce = bounce


class UnknownOutcome(DeliveryError):
    """The whole message was sent but no final reply came: it may have been delivered."""


class FatalTransportError(DeliveryError):
    """A problem of the session (connection, TLS, AUTH, refused sender, 421): stop the run."""


@dataclass(frozen=True)
class Encoded:
    """A message already serialized (the bytes `as_bytes` gives), with its envelope."""

    sender: str
    recipient: str
    data: bytes
    smtputf8: bool = False

    @classmethod
    def of(cls, message: EmailMessage) -> Encoded:
        return cls(
            sender=message["From"].addresses[0].addr_spec,
            recipient=message["To"].addresses[0].addr_spec,
            data=message.as_bytes(),
            smtputf8=bool(getattr(message.policy, "utf8", False)),
        )

    def as_bytes(self) -> bytes:
        return self.data


class Transport(Protocol):
    # Whether `send` should be given `Encoded` messages (built faster than EmailMessage).
    takes_encoded: bool

    def send(self, message: EmailMessage | Encoded) -> str: ...

    def close(self) -> None: ...

    def in_doubt(self) -> bool:
        """Whether a send interrupted right now (Ctrl-C) may have delivered its message."""
        ...


@dataclass
class MemoryTransport:
    """Keeps messages in a list; for tests and dry runs."""

    messages: list[EmailMessage] = field(default_factory=list)
    takes_encoded: bool = False  # tests read the messages

    def send(self, message: EmailMessage | Encoded) -> str:
        if isinstance(message, Encoded):
            parsed = email.message_from_bytes(message.data, policy=email.policy.SMTP)
            assert isinstance(parsed, EmailMessage)
            message = parsed
        self.messages.append(message)
        return "250 stored in memory"

    def close(self) -> None:
        pass

    def in_doubt(self) -> bool:
        return True


@dataclass
class MaildirTransport:
    """Delivers into a standard Maildir (cur/new/tmp) that any mail client can open.

    The folder and its missing parents are created private (0700). A message is
    written to tmp/ and then moved into new/, so a failure delivers nothing; a
    folder that cannot be written stops the run.
    """

    path: Path
    takes_encoded: bool = True

    def send(self, message: EmailMessage | Encoded) -> str:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            box = mailbox.Maildir(self.path, create=True)
            key = box.add(message.as_bytes())
        except OSError as exc:
            raise FatalTransportError(
                f"cannot write the Maildir outbox {self.path}: {exc}"
            ) from None
        return f"250 stored in {self.path / 'new' / key}"

    def close(self) -> None:
        pass

    def in_doubt(self) -> bool:
        return True


# --- SMTP replies -----------------------------------------------------------------------

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
# Enhanced status codes (RFC 3463) that say the recipient's address itself is refused:
# 5.1.x bad destination (but 5.1.7 and 5.1.8 are about the sender), 5.2.1 mailbox disabled.
_ADDRESS_REFUSED = {"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.4", "5.1.6", "5.1.10", "5.2.1"}


def not_offered(where: str, exc: smtplib.SMTPNotSupportedError | str, tls: bool) -> str:
    """What the server lacks that the settings ask for, and the settings to change
    (`tls`: the connection is encrypted, so a server offering logins only over TLS is
    not the cause)."""
    if "STARTTLS" in str(exc):
        return (
            f"SMTP server {where} does not offer STARTTLS: set smtp.ssl = true if it "
            "speaks TLS from the start (port 465), or smtp.starttls = false for a server "
            "without TLS"
        )
    if "AUTH" in str(exc):
        fix = (
            "unset it, or use a port that takes logins"
            if tls
            else "set smtp.starttls = true if it takes logins only over TLS (most servers), "
            "or unset it"
        )
        return f"SMTP server {where} does not offer AUTH (login), but smtp.username is set: {fix}"
    return f"SMTP server {where} does not offer a feature we need: {one_line(str(exc))}"


def reply_text(code: int, text: bytes | str) -> str:
    """An SMTP reply as one printable line: `550 5.1.1 No such user`."""
    body = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return one_line(f"{code} {body}")[:500]


def enhanced_code(text: str) -> str:
    """The RFC 3463 enhanced status code that starts a reply's text, or ''."""
    first = text.split(" ", 1)[0] if text else ""
    return first if _ENHANCED.match(first) else ""


def recipient_refusal(code: int, text: bytes | str, recipient: str, stage: str) -> DeliveryError:
    """The error for a refusal of one recipient's transaction at RCPT or DATA.

    421 closes the session (fatal). Address refusals (5.1.x, 5.2.1) bounce. Other
    refusals (policy 5.7.x, system, content, or no enhanced code at all) carry a
    hint, so that the same refusal for several recipients in a row stops the run.
    """
    reply = reply_text(code, text)
    if code == 421:
        return FatalTransportError(f"the SMTP server closed the session at {stage}: {reply}", reply)
    enhanced = enhanced_code(reply.split(" ", 1)[1] if " " in reply else "")
    per_address = enhanced.split(".")[1:2] in (["1"], ["2"])
    hint = None if per_address else f"{stage}: " + reply.replace(recipient, "<recipient>")
    if 400 <= code < 500:
        return TemporaryFailure(f"{stage}: {reply}", reply, hint)
    return PermanentFailure(f"{stage}: {reply}", reply, hint, bounce=enhanced in _ADDRESS_REFUSED)


class _ConnectionLost(Exception):
    """The connection broke before the end of the message body: nothing was delivered."""


def wire_bytes(message: EmailMessage | Encoded) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled, the end-of-data mark."""
    raw = re.sub(rb"\r\n|\r|\n", b"\r\n", message.as_bytes())
    raw = re.sub(rb"(?m)^\.", b"..", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


@dataclass
class SmtpTransport:
    """SMTP with implicit TLS or STARTTLS, AUTH, timeouts, connection reuse and a rate limit.

    One connection carries up to `max_per_connection` messages. The exchange is
    done step by step (MAIL, RCPT, DATA, body, final reply) so that a failure is
    placed exactly: a connection lost before the body is complete is retried on
    a new connection once; after the body, the outcome is unknown.
    """

    settings: SmtpConfig
    max_per_connection: int = 100
    rate: float | None = None  # messages per second
    ssl_context: ssl.SSLContext | None = None
    monotonic: Callable[[], float] = time.monotonic
    takes_encoded: bool = True
    sleep: Callable[[float], None] = time.sleep
    _client: smtplib.SMTP | None = field(default=None, init=False, repr=False)
    _sent_on_connection: int = field(default=0, init=False)
    _last_send: float | None = field(default=None, init=False)
    _in_doubt: bool = field(default=False, init=False)

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        assert s.host, "SMTP transport without a host"
        context = self.ssl_context or ssl.create_default_context()
        client: smtplib.SMTP | None = None
        try:
            if s.ssl:
                client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.starttls:
                    client.starttls(context=context)
            client.ehlo_or_helo_if_needed()
            if s.username:
                client.login(s.username, s.password or "")
        except Exception as exc:
            if client is not None:
                client.close()
            raise self._connect_error(exc) from None
        self._sent_on_connection = 0
        return client

    def _connect_error(self, exc: Exception) -> FatalTransportError:
        where = self.where
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            reply = reply_text(exc.smtp_code, exc.smtp_error)
            return FatalTransportError(f"SMTP authentication failed: {reply}")
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            tls = self.settings.ssl or self.settings.starttls
            return FatalTransportError(not_offered(where, exc, tls))
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return FatalTransportError(f"TLS with {where} failed: {exc}")
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = reply_text(exc.smtp_code, exc.smtp_error)
            return FatalTransportError(f"SMTP server {where} refused us: {reply}")
        return FatalTransportError(f"cannot connect to SMTP {where}: {one_line(str(exc))}")

    def _pace(self) -> None:
        if self.rate and self._last_send is not None:
            wait = 1.0 / self.rate - (self.monotonic() - self._last_send)
            if wait > 0:
                self.sleep(wait)
        self._last_send = self.monotonic()

    def _client_for_message(self) -> smtplib.SMTP:
        if self._client is None or self._sent_on_connection >= self.max_per_connection:
            self.close()
            self._client = self._connect()
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    @staticmethod
    def _command(call: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
        """Run one command before the body; a broken connection or reply is `_ConnectionLost`."""
        try:
            code, text = call()
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as exc:
            raise _ConnectionLost(one_line(str(exc)) or type(exc).__name__) from None
        if code < 200 or code > 599:
            raise _ConnectionLost(f"unreadable reply {reply_text(code, text)!r}")
        return code, text

    def _reset(self, client: smtplib.SMTP) -> None:
        """End a refused transaction so the connection can carry the next message."""
        try:
            code, _ = client.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code != 250:
            self._drop()

    def _transaction(self, sender: str, recipient: str, data: bytes, smtputf8: bool) -> str:
        client = self._client_for_message()
        if smtputf8 and not client.has_extn("smtputf8"):
            raise PermanentFailure(
                f"SMTP server {self.where} does not offer SMTPUTF8, which the address "
                f"{recipient} needs (its local part is not ASCII)"
            )
        options = []
        if smtputf8:
            options = ["SMTPUTF8", *(["BODY=8BITMIME"] if client.has_extn("8bitmime") else [])]
        code, text = self._command(lambda: client.mail(sender, options))
        if code != 250:
            self._reset(client)
            raise FatalTransportError(
                f"SMTP server {self.where} refused the sender {sender}: {reply_text(code, text)}"
            )
        code, text = self._command(lambda: client.rcpt(recipient))
        if code not in (250, 251):
            self._reset(client)
            raise recipient_refusal(code, text, recipient, "RCPT")

        def data_command() -> tuple[int, bytes]:
            client.putcmd("data")
            return client.getreply()

        code, text = self._command(data_command)
        if code != 354:
            self._reset(client)
            raise recipient_refusal(code, text, recipient, "DATA")
        # From here an interruption may leave the message delivered.
        self._in_doubt = True
        try:
            client.send(data)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # The end-of-data mark never left: the server cannot have accepted it.
            self._in_doubt = False
            raise _ConnectionLost(f"while sending the message: {one_line(str(exc))}") from None
        try:
            code, text = client.getreply()
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as exc:
            self._in_doubt = False
            self._drop()
            raise UnknownOutcome(
                f"no reply after the message was sent: {one_line(str(exc))}",
                hint="no reply after the message was sent",
            ) from None
        self._in_doubt = False
        if code == 250:
            self._sent_on_connection += 1
            return reply_text(code, text)
        if not 400 <= code < 600:
            self._drop()
            raise UnknownOutcome(
                f"unreadable reply after the message was sent: {reply_text(code, text)}",
                hint="unreadable reply after the message was sent",
            )
        raise recipient_refusal(code, text, recipient, "end of data")

    def send(self, message: EmailMessage | Encoded) -> str:
        self._pace()
        self._in_doubt = False
        encoded = message if isinstance(message, Encoded) else Encoded.of(message)
        sender, recipient, smtputf8 = encoded.sender, encoded.recipient, encoded.smtputf8
        data = wire_bytes(encoded)
        for attempt in (1, 2):
            try:
                return self._transaction(sender, recipient, data, smtputf8)
            except _ConnectionLost as exc:
                self._drop()
                if attempt == 2:
                    raise TemporaryFailure(
                        f"connection lost before the message was sent: {exc}",
                        hint="connection lost before the message was sent",
                    ) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._client.quit()
            self._drop()

    def in_doubt(self) -> bool:
        return self._in_doubt
