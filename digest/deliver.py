"""Deliver stage: build each recipient's MIME message and hand it to a transport.

* `DigestMailer` renders each distinct digest once (`digest.render`) and
  personalizes a copy per subscriber: greeting, signed links, headers.
* `build_message` makes the multipart/alternative message: From with a
  display name, Reply-To, To, Subject, Date, a deterministic Message-ID per
  subscriber and date, List-Id, List-Unsubscribe (+ One-Click POST, RFC 8058)
  and optional DKIM. No header can be injected: CR/LF never reach one.
* `Sender` claims each queued delivery, sends it through a transport
  (`digest.transport`: SMTP, the Maildir outbox, memory) and records the
  outcome in the ledger. One recipient's failure (a message that cannot be
  built, a refusal) is recorded on that recipient's row and the run goes on;
  only a failure of the whole session stops it.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from digest import db
from digest.config import DeliveryConfig, DigestSettings, MailConfig
from digest.errors import DigestError
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
from digest.subscribers import sendable_address
from digest.transport import (
    FatalTransportError,
    PermanentFailure,
    TemporaryFailure,
    Transport,
    UnknownOutcome,
)

# Unfolded headers (RFC 5322 allows 998 characters) keep the unsubscribe URL on one line.
MAIL_POLICY = policy.SMTP.clone(max_line_length=998)
# For a recipient whose local part is not ASCII: UTF-8 headers, sent with SMTPUTF8 (RFC 6531).
MAIL_POLICY_UTF8 = MAIL_POLICY.clone(utf8=True)
DKIM_HEADERS = (b"from", b"to", b"subject", b"date", b"list-unsubscribe", b"list-unsubscribe-post")


def message_id(subscriber: Subscriber, digest_date: date, domain: str) -> str:
    """Deterministic per subscriber and date, so a duplicate is traceable."""
    tag = hashlib.sha256(f"{subscriber.id}:{subscriber.secret}".encode()).hexdigest()[:10]
    return f"<digest.{digest_date:%Y%m%d}.{subscriber.id}.{tag}@{domain}>"


def describe(exc: BaseException) -> str:
    """An exception as one short line for the ledger: `ValueError: bad address`."""
    return one_line(f"{type(exc).__name__}: {exc}")[:300]


class Unsendable(Exception):
    """A delivery whose message cannot be made; `retry` when the cause may go away."""

    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


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
    """The complete multipart/alternative message for one recipient.

    The recipient's domain is written in ASCII (punycode); an address whose local
    part is not ASCII makes a UTF-8 message (`MAIL_POLICY_UTF8`) that needs SMTPUTF8.
    ValueError if `to` is not a valid address.
    """
    domain = mail.from_address.rpartition("@")[2]
    address = sendable_address(to)
    # Bodies are encoded under the SMTP policy (quoted-printable lines of at most 76
    # characters); headers are then generated unfolded under MAIL_POLICY.
    message = EmailMessage(policy=policy.SMTP)
    sender = Address(display_name=one_line(mail.from_name), addr_spec=mail.from_address)
    message["From"] = sender
    if address.isascii():
        message["To"] = Address(addr_spec=address)
    else:
        message["To"] = address  # validated, so no CR/LF; Address() refuses non-ASCII
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
    message.policy = MAIL_POLICY if address.isascii() else MAIL_POLICY_UTF8
    if dkim is not None:
        sign_dkim(message, dkim)
    return message


def sign_dkim(message: EmailMessage, key: Dkim) -> None:
    """Add a DKIM-Signature over From, To, Subject, Date and the List-Unsubscribe headers."""
    import dkim as dkimpy

    signature = dkimpy.sign(
        message.as_bytes(),
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
        """The message of a planned delivery, for its subscriber.

        `Unsendable` if the digest cannot be rendered (shared by everyone who gets
        the same content: worth retrying once the cause is fixed) or this
        recipient's message cannot be built (e.g. an address no longer valid).
        Database errors pass through.
        """
        digest = delivery.digest
        subscriber = delivery.subscriber
        if digest is None:
            raise Unsendable("the delivery has no digest to send", retry=False)
        try:
            rendered = self.render_items(
                session,
                digest.content_hash,
                list(digest.items),
                digest.digest_date,
                subscriber.weekday is not None,
                json.loads(digest.more_matched or "{}"),
            )
        except SQLAlchemyError:
            raise
        except Exception as exc:
            reason = f"the digest could not be rendered: {describe(exc)}"
            raise Unsendable(reason, retry=True) from exc
        try:
            return self.message(subscriber, rendered, digest.digest_date, sent_at, digest.id)
        except Exception as exc:
            reason = f"the message could not be built: {describe(exc)}"
            raise Unsendable(reason, retry=False) from exc

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

# This many recipients in a row failing the same way (the same hint) is the session's
# problem, not theirs: the run stops rather than burn through the whole queue.
SESSION_STREAK = 3


@dataclass
class SendReport:
    """What a `digest send` run did, and where the ledger stands for its dates."""

    sent: int = 0
    empty: int = 0
    deferred: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    queued: int = 0
    left_out: int = 0  # active subscribers that cannot be planned (an unknown timezone)
    bounced: list[str] = field(default_factory=list)
    fatal: str | None = None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        problems = self.failed or self.unknown or self.deferred or self.left_out
        return self.fatal is None and not problems

    def line(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        return (
            f"{verb} {self.sent}, empty {self.empty}, deferred {self.deferred}, "
            f"failed {self.failed}, unknown {self.unknown}"
            + (f", skipped {self.skipped}" if self.skipped else "")
            + (f", still queued {self.queued}" if self.queued else "")
            + (f", left out {self.left_out}" if self.left_out else "")
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
    at_send_time: bool = False,
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
        try:
            with session.begin_nested():
                try:
                    selection = runs[as_of].select(subscriber, day)
                except DigestError as exc:
                    # This subscriber's stored data (e.g. a topic query an older version
                    # accepted) cannot be used: their row fails, everyone else goes on.
                    session.add(unplannable(subscriber.id, day, now, f"not planned: {exc}"))
                    continue
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


def unplannable(subscriber_id: int, day: date, now: datetime, reason: str) -> Delivery:
    """A failed ledger row for a subscriber whose digest cannot even be chosen."""
    return Delivery(
        subscriber_id=subscriber_id,
        digest_date=day,
        status="failed",
        selected_at=now,
        attempts=0,
        last_reply=one_line(reason)[:500],
        created_at=now,
        updated_at=now,
    )


@dataclass
class Outcome:
    """How one claimed delivery ended, and the hint of its failure (see `digest.transport`)."""

    delivery: Delivery
    subscriber: Subscriber
    status: str
    reply: str = ""
    hint: str | None = None
    refused: bool = False  # failed on a refusal that a block of the whole session explains


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

    def _release(self, delivery_id: int) -> None:
        """Back to the queue as claimed: nothing of it can have been delivered."""
        with db.transaction(self.factory) as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            delivery.status = "queued"
            delivery.attempts = max(0, delivery.attempts - 1)
            delivery.lease_until = None
            delivery.updated_at = self.clock()

    def _compose(
        self, delivery_id: int
    ) -> tuple[Delivery, Subscriber, EmailMessage | Unsendable | None]:
        """The claimed row, its subscriber and its message (None: no longer active)."""
        with self.factory() as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            subscriber = delivery.subscriber
            if subscriber.status != "active":
                return delivery, subscriber, None
            try:
                return (
                    delivery,
                    subscriber,
                    self.mailer.delivery_message(session, delivery, self.clock()),
                )
            except Unsendable as exc:
                return delivery, subscriber, exc

    def _retry_or_fail(self, delivery: Delivery, subscriber: Subscriber, reply: str) -> str:
        now = self.clock()
        delay = self.config.retry_base_seconds * 2 ** max(0, delivery.attempts - 1)
        retry_at = now + timedelta(seconds=delay * (1 + self.rng.uniform(0, 0.5)))
        if retry_at >= day_end(delivery.digest_date, subscriber.timezone):
            self._mark(
                delivery.id, status="failed", last_reply=f"gave up, the day is over: {reply}"[:500]
            )
            return "failed"
        self._mark(delivery.id, status="deferred", next_attempt_at=retry_at, last_reply=reply)
        return "deferred"

    def _bounce(self, subscriber: Subscriber, report: SendReport) -> None:
        with db.transaction(self.factory) as session:
            bounced = session.get(Subscriber, subscriber.id)
            assert bounced is not None
            bounced.status = "bounced"
            bounced.updated_at = self.clock()
        report.bounced.append(subscriber.email)

    def send_one(self, delivery_id: int, report: SendReport) -> Outcome:
        """Send a claimed delivery and record the outcome in the ledger.

        A failure of this recipient (its message, a refusal, an unknown outcome)
        is recorded on its row; a failure of the session (FatalTransportError) or
        of the database puts the row back in the queue and is raised.
        """
        try:
            delivery, subscriber, message = self._compose(delivery_id)
        except BaseException:
            self._release(delivery_id)
            raise
        if message is None:
            reason = f"subscriber {subscriber.status}"
            self._mark(delivery_id, status="skipped", last_reply=reason)
            report.skipped += 1
            return Outcome(delivery, subscriber, "skipped", reason)
        if isinstance(message, Unsendable):
            if message.retry:  # the shared rendering failed: maybe fixed by a later run
                status = self._retry_or_fail(delivery, subscriber, message.reason)
                return Outcome(delivery, subscriber, status, message.reason, message.reason)
            self._mark(delivery_id, status="failed", last_reply=message.reason)
            return Outcome(delivery, subscriber, "failed", message.reason)
        try:
            reply = self.transport.send(message)
        except TemporaryFailure as exc:
            status = self._retry_or_fail(delivery, subscriber, exc.reply)
            return Outcome(delivery, subscriber, status, exc.reply, exc.hint)
        except PermanentFailure as exc:
            self._mark(delivery_id, status="failed", last_reply=exc.reply)
            if exc.bounce:
                self._bounce(subscriber, report)
            return Outcome(delivery, subscriber, "failed", exc.reply, exc.hint, refused=True)
        except UnknownOutcome as exc:
            self._mark(delivery_id, status="unknown", last_reply=exc.reply)
            return Outcome(delivery, subscriber, "unknown", exc.reply, exc.hint)
        except FatalTransportError:
            self._release(delivery_id)
            raise
        except Exception as exc:
            # Unexpected, and maybe about this message only: once it may have reached the
            # server it is unknown, else retried later; the run goes on (or stops on a streak).
            reason = f"could not be sent: {describe(exc)}"
            if self.transport.in_doubt():
                self._mark(delivery_id, status="unknown", last_reply=reason)
                return Outcome(delivery, subscriber, "unknown", reason, reason)
            status = self._retry_or_fail(delivery, subscriber, reason)
            return Outcome(delivery, subscriber, status, reason, reason)
        except BaseException as exc:
            # Interrupted (Ctrl-C): once the message may have reached the server, it is
            # not resent automatically; before that, it goes back to the queue.
            if self.transport.in_doubt():
                self._mark(delivery_id, status="unknown", last_reply=f"interrupted: {exc!r}"[:500])
            else:
                self._release(delivery_id)
            raise
        self._mark(delivery_id, status="sent", sent_at=self.clock(), last_reply=reply[:500])
        report.sent += 1
        if self.on_progress is not None:
            self.on_progress(subscriber.email)
        return Outcome(delivery, subscriber, "sent", reply)

    def _session_blocked(self, streak: list[Outcome]) -> str:
        """Stop after a streak of identical failures; refused rows are retried later instead."""
        for outcome in streak:
            if outcome.refused:
                self._retry_or_fail(outcome.delivery, outcome.subscriber, outcome.reply)
        return (
            f"{len(streak)} recipients in a row failed the same way, so the server or the "
            f"sender is at fault, not the recipients; stopped: {streak[-1].hint}"
        )

    def send_queued(self, dates: set[date], report: SendReport, limit: int | None) -> None:
        """Claim and send due rows of `dates` until none is left, the limit, or a stop."""
        lease = timedelta(seconds=self.config.lease_seconds)
        if self.on_start is not None:
            with self.factory() as session:
                waiting = db.count_deliveries(session, dates)
            total = waiting.get("queued", 0) + waiting.get("deferred", 0)
            self.on_start(total if limit is None else min(limit, total))
        streak: list[Outcome] = []
        try:
            while not self.should_stop() and (limit is None or report.sent < limit):
                now = self.clock()
                with db.transaction(self.factory) as session:
                    claimed = db.claim_delivery(session, now, now + lease, dates)
                if claimed is None:
                    break
                try:
                    outcome = self.send_one(claimed, report)
                except FatalTransportError as exc:
                    report.fatal = str(exc)
                    break
                if outcome.hint is None or (streak and streak[-1].hint != outcome.hint):
                    streak = []
                if outcome.hint is not None:
                    streak.append(outcome)
                if len(streak) >= SESSION_STREAK:
                    report.fatal = self._session_blocked(streak)
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
    at_send_time: bool = False,
) -> SendReport:
    """Plan the digests of the `due` (subscriber, date) pairs and send every queued one.

    `digest send` and the scheduler's dispatcher both run exactly this. Digests are
    chosen as of `now`, or with `at_send_time` as of their send time (the scheduler,
    and `digest send --date`).
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
        report.queued = counts.get("queued", 0)
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
            try:
                sender.mailer.delivery_message(session, delivery, now)
                report.sent += 1
            except Unsendable:
                report.failed += 1
        session.rollback()
    return report
