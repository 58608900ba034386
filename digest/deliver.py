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
import json
import mailbox
import random
import secrets
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from digest import db
from digest.config import DeliveryConfig, DigestSettings, MailConfig, SmtpConfig
from digest.links import subscriber_links
from digest.models import Delivery, Paper, Subscriber
from digest.relevance import Corpus
from digest.render import ItemLike, Notice, Recipient, RenderedDigest, Renderer, topic_title
from digest.select import (
    DigestContent,
    SelectionRun,
    digest_content,
    record_selection,
    selection_time,
)
from digest.sources.records import one_line

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


def classify(code: int, text: bytes | str) -> DeliveryError:
    """The error for an SMTP reply: 5.7.x (policy, auth) is fatal, 4xx temporary, 5xx permanent."""
    reply = _reply_text(code, text)
    enhanced = reply.split(" ", 2)[1] if " " in reply else ""
    if enhanced.startswith("5.7") or code in (530, 535, 538):
        return FatalTransportError(f"SMTP policy or authentication refusal: {reply}", reply)
    if 400 <= code < 500:
        return TemporaryFailure("temporary failure", reply)
    return PermanentFailure("rejected", reply)


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
        client: smtplib.SMTP | None = None
        try:
            if s.ssl:
                client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.starttls:
                    client.starttls(context=context)
            if s.username:
                client.login(s.username, s.password or "")
        except Exception as exc:
            if client is not None:
                client.close()
            raise self._connect_error(exc) from None
        self._sent_on_connection = 0
        return client

    def _connect_error(self, exc: Exception) -> FatalTransportError:
        where = f"{self.settings.host}:{self.settings.port}"
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            reply = _reply_text(exc.smtp_code, exc.smtp_error)
            return FatalTransportError(f"SMTP authentication failed: {reply}")
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return FatalTransportError(f"SMTP server {where} does not support {exc}")
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return FatalTransportError(f"TLS with {where} failed: {exc}")
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = _reply_text(exc.smtp_code, exc.smtp_error)
            return FatalTransportError(f"SMTP server {where} refused us: {reply}")
        return FatalTransportError(f"cannot connect to SMTP {where}: {exc}")

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
            raise classify(code, text)
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
                raise classify(code, text) from None
            except smtplib.SMTPResponseException as exc:
                raise classify(exc.smtp_code, exc.smtp_error) from None
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
        more: Mapping[str, int] | None = None,
    ) -> RenderedDigest:
        """The rendering of content `key` (e.g. the digest's content hash), made once."""
        if (key, weekly) not in self._cache:
            self.renders += 1
            self._cache[key, weekly] = self.renderer.render(
                items,
                papers,
                digest_date=digest_date,
                weekly=weekly,
                more=more,
                base_url=self.base_url,
            )
        return self._cache[key, weekly]

    def render_items(
        self,
        session: Session,
        key: str,
        items: Sequence[ItemLike],
        digest_date: date,
        weekly: bool,
        more: Mapping[str, int] | None = None,
    ) -> RenderedDigest:
        """Load the items' papers and render them (once per content `key`)."""
        if (key, weekly) in self._cache:
            return self._cache[key, weekly]
        papers = db.papers_by_id(session, [item.paper_id for item in items])
        return self.rendered(key, items, papers, digest_date, weekly, more)

    def delivery_message(
        self, session: Session, delivery: Delivery, sent_at: datetime
    ) -> EmailMessage:
        """The message of a planned delivery, for its subscriber."""
        digest = delivery.digest
        assert digest is not None, "an empty delivery has no message"
        subscriber = delivery.subscriber
        rendered = self.render_items(
            session,
            digest.content_hash,
            list(digest.items),
            digest.digest_date,
            subscriber.weekday is not None,
            json.loads(digest.more_matched or "{}"),
        )
        return self.message(subscriber, rendered, digest.digest_date, sent_at, digest.id)

    def rendered_for(
        self,
        session: Session,
        subscriber: Subscriber,
        digest_date: date | None,
        now: datetime,
        settings: DigestSettings,
    ) -> tuple[DigestContent, RenderedDigest, date, datetime]:
        """What `subscriber` receives on `digest_date` (default: their local today), rendered.

        Writes nothing. `digest preview` and the web's preview pages show exactly this.
        """
        day, now, content = digest_content(session, subscriber, digest_date, now, settings)
        weekly = subscriber.weekday is not None
        rendered = self.render_items(session, content.key, content.items, day, weekly, content.more)
        return content, rendered, day, now

    def preview(
        self,
        session: Session,
        subscriber: Subscriber,
        digest_date: date | None,
        now: datetime,
        settings: DigestSettings,
    ) -> tuple[EmailMessage, str, str]:
        """(message, html, text) that `subscriber` receives on `digest_date`; writes nothing."""
        content, rendered, day, now = self.rendered_for(
            session, subscriber, digest_date, now, settings
        )
        html, text = rendered.personalize(self.recipient(subscriber, content.digest_id))
        return self.message(subscriber, rendered, day, now, content.digest_id), html, text

    def notice_message(
        self, subscriber: Subscriber, notice: Notice, sent_at: datetime
    ) -> EmailMessage:
        """A one-off email to `subscriber` (a confirmation request...), signed like a digest."""
        html, text = self.renderer.render_notice(notice)
        domain = self.mail.from_address.rpartition("@")[2]
        stamp = f"{sent_at:%Y%m%d%H%M%S}"
        return build_message(
            mail=self.mail,
            to=subscriber.email,
            subject=notice.subject,
            html=html,
            text=text,
            msgid=f"<notice.{stamp}.{subscriber.id}.{secrets.token_hex(4)}@{domain}>",
            sent_at=sent_at,
            unsubscribe_url=self.recipient(subscriber).unsubscribe_url,
            dkim=self.dkim,
        )

    def recipient(self, subscriber: Subscriber, digest_id: int | None = None) -> Recipient:
        links = subscriber_links(
            self.base_url, self.secret_key, subscriber.id, subscriber.secret, digest_id
        )
        weekly = subscriber.weekday is not None
        return Recipient(
            email=subscriber.email,
            topics=[topic_title(t.query, t.label, weekly) for t in subscriber.topics],
            unsubscribe_url=links.unsubscribe,
            manage_url=links.manage,
            view_url=links.view,
            name=subscriber.name,
        )

    def message(
        self,
        subscriber: Subscriber,
        rendered: RenderedDigest,
        digest_date: date,
        sent_at: datetime,
        digest_id: int | None = None,
    ) -> EmailMessage:
        recipient = self.recipient(subscriber, digest_id)
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


# --- the ledger: plan, claim, send, mark ------------------------------------------------


@dataclass
class SendReport:
    """What a `digest send` run did, and where the ledger stands for its dates."""

    sent: int = 0
    empty: int = 0
    deferred: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    bounced: list[str] = field(default_factory=list)
    fatal: str | None = None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.fatal is None and not (self.failed or self.unknown or self.deferred)

    def line(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        return (
            f"{verb} {self.sent}, empty {self.empty}, deferred {self.deferred}, "
            f"failed {self.failed}, unknown {self.unknown}"
            + (f", skipped {self.skipped}" if self.skipped else "")
        )


def day_end(digest_date: date, timezone: str) -> datetime:
    """The instant the subscriber's digest day ends (their next local midnight)."""
    return datetime.combine(digest_date + timedelta(days=1), dtime(), tzinfo=ZoneInfo(timezone))


DueList = Sequence[tuple[Subscriber, date]]


def plan_deliveries(
    session: Session,
    due: DueList,
    *,
    now: datetime,
    settings: DigestSettings,
    at_send_time: bool = True,
) -> tuple[set[date], int, int]:
    """Choose the digest of each (subscriber, digest date) that has none yet.

    Returns (the digest dates involved, deliveries queued, deliveries empty).
    Each subscriber is planned in a savepoint, so a row another process planned
    first (the unique constraint) is simply left to it.
    """
    # With `at_send_time`, each digest is chosen as of its send time (now, if that is
    # still ahead), so a past date or a late catch-up never sees later papers or upvotes;
    # without, as of now (`digest send` for today). Runs at different instants share the
    # corpus statistics.
    runs: dict[datetime, SelectionRun] = {}
    corpus = Corpus(session)
    dates: set[date] = set()
    queued = empty = 0
    for subscriber, day in due:
        dates.add(day)
        if db.find_delivery(session, subscriber.id, day) is not None:
            continue
        as_of = selection_time(subscriber, day, now) if at_send_time else now
        if as_of not in runs:
            runs[as_of] = SelectionRun(session, as_of, settings, corpus)
        selection = runs[as_of].select(subscriber, day)
        try:
            with session.begin_nested():
                delivery = record_selection(
                    session, subscriber, selection, now, settings.send_empty
                )
        except IntegrityError:
            continue
        if delivery.status == "empty":
            empty += 1
        else:
            queued += 1
    return dates, queued, empty


@dataclass
class Sender:
    """Sends queued deliveries through a transport, one claimed row at a time."""

    factory: sessionmaker[Session]
    transport: Transport
    mailer: DigestMailer
    config: DeliveryConfig
    clock: Callable[[], datetime]
    rng: random.Random = field(default_factory=random.Random)
    should_stop: Callable[[], bool] = lambda: False
    on_start: Callable[[int], None] | None = None
    on_progress: Callable[[str], None] | None = None

    def _mark(self, delivery_id: int, **values: object) -> Delivery:
        with db.transaction(self.factory) as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            for name, value in values.items():
                setattr(delivery, name, value)
            delivery.updated_at = self.clock()
            delivery.lease_until = None
            return delivery

    def _compose(self, delivery_id: int) -> tuple[EmailMessage | None, Subscriber, Delivery]:
        with self.factory() as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            subscriber = delivery.subscriber
            if subscriber.status != "active":
                return None, subscriber, delivery
            message = self.mailer.delivery_message(session, delivery, self.clock())
            return message, subscriber, delivery

    def _retry_or_fail(self, delivery: Delivery, subscriber: Subscriber, reply: str) -> str:
        now = self.clock()
        delay = self.config.retry_base_seconds * 2 ** max(0, delivery.attempts - 1)
        retry_at = now + timedelta(seconds=delay * (1 + self.rng.uniform(0, 0.5)))
        if retry_at >= day_end(delivery.digest_date, subscriber.timezone):
            self._mark(
                delivery.id, status="failed", last_reply=f"gave up, the day is over: {reply}"
            )
            return "failed"
        self._mark(delivery.id, status="deferred", next_attempt_at=retry_at, last_reply=reply)
        return "deferred"

    def send_one(self, delivery_id: int, report: SendReport) -> None:
        """Send a claimed delivery and record the outcome in the ledger."""
        try:
            message, subscriber, delivery = self._compose(delivery_id)
        except Exception:
            self._mark(delivery_id, status="queued")
            raise
        if message is None:
            self._mark(delivery_id, status="skipped", last_reply=f"subscriber {subscriber.status}")
            report.skipped += 1
            return
        try:
            reply = self.transport.send(message)
        except TemporaryFailure as exc:
            self._retry_or_fail(delivery, subscriber, exc.reply)
            return
        except PermanentFailure as exc:
            self._mark(delivery_id, status="failed", last_reply=exc.reply)
            with db.transaction(self.factory) as session:
                bounced = session.get(Subscriber, subscriber.id)
                assert bounced is not None
                bounced.status = "bounced"
                bounced.updated_at = self.clock()
            report.bounced.append(subscriber.email)
            return
        except FatalTransportError:
            # Refused before the message was accepted (connection, TLS, login, policy):
            # the row goes back to the queue untouched.
            self._mark(delivery_id, status="queued", attempts=delivery.attempts - 1)
            raise
        except BaseException as exc:
            # Interrupted or failed in a way that says nothing about acceptance: the
            # message may have arrived, so it is not resent automatically.
            self._mark(delivery_id, status="unknown", last_reply=f"interrupted: {exc!r}"[:500])
            raise
        self._mark(delivery_id, status="sent", sent_at=self.clock(), last_reply=reply[:500])
        report.sent += 1
        if self.on_progress is not None:
            self.on_progress(subscriber.email)

    def send_queued(self, dates: set[date], report: SendReport, limit: int | None) -> None:
        """Claim and send due rows of `dates` until none is left, the limit, or a stop."""
        lease = timedelta(seconds=self.config.lease_seconds)
        if self.on_start is not None:
            with self.factory() as session:
                waiting = db.count_deliveries(session, dates)
            total = waiting.get("queued", 0) + waiting.get("deferred", 0)
            self.on_start(total if limit is None else min(limit, total))
        try:
            while not self.should_stop() and (limit is None or report.sent < limit):
                now = self.clock()
                with db.transaction(self.factory) as session:
                    claimed = db.claim_delivery(session, now, now + lease, dates)
                if claimed is None:
                    break
                try:
                    self.send_one(claimed, report)
                except FatalTransportError as exc:
                    report.fatal = str(exc)
                    break
        finally:
            self.transport.close()


def send_digests(
    sender: Sender,
    due: Callable[[Session], DueList],
    *,
    now: datetime,
    settings: DigestSettings,
    dry_run: bool = False,
    limit: int | None = None,
    retry_unknown: bool = False,
    at_send_time: bool = True,
) -> SendReport:
    """Plan the digests of the `due` (subscriber, date) pairs and send every queued one.

    `digest send` and the scheduler's dispatcher both run exactly this. Digests are
    chosen as of their send time unless `at_send_time` is false (then as of `now`).
    """
    report = SendReport(dry_run=dry_run)
    if dry_run:
        return _dry_run(sender, due, now=now, settings=settings, at_send_time=at_send_time)
    with db.transaction(sender.factory) as session:
        db.expire_leases(session, now)
        dates, _, _ = plan_deliveries(
            session, due(session), now=now, settings=settings, at_send_time=at_send_time
        )
        if retry_unknown:
            db.requeue_unknown(session, now, dates)
    if dates:
        sender.send_queued(dates, report, limit)
        with sender.factory() as session:
            counts = db.count_deliveries(session, dates)
        report.empty = counts.get("empty", 0)
        report.deferred = counts.get("deferred", 0)
        report.failed = counts.get("failed", 0)
        report.unknown = counts.get("unknown", 0)
    return report


def _dry_run(
    sender: Sender,
    due: Callable[[Session], DueList],
    *,
    now: datetime,
    settings: DigestSettings,
    at_send_time: bool,
) -> SendReport:
    """Plan and render everything that would be sent; write and send nothing."""
    report = SendReport(dry_run=True)
    with sender.factory() as session:
        dates, _, report.empty = plan_deliveries(
            session, due(session), now=now, settings=settings, at_send_time=at_send_time
        )
        queued = session.scalars(
            select(Delivery).where(
                Delivery.digest_date.in_(list(dates)), Delivery.status.in_(("queued", "deferred"))
            )
        ).all()
        for delivery in queued:
            sender.mailer.delivery_message(session, delivery, now)
            report.sent += 1
        session.rollback()
    return report
