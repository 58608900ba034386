"""Building each recipient's message: render a digest, personalize it, wrap it in MIME.

* `DigestMailer` renders each digest (`digest.render`, from cards inlined once
  per run) and personalizes a copy per subscriber: greeting, signed links,
  headers. `DigestMailer.encoded` assembles the message's bytes from pieces
  quoted-printable encoded once per run, encoding only the recipient's lines
  (the wire form, a skeleton and encoded pieces, is `digest.wire`'s).
* `build_message` makes the multipart/alternative message: From with a
  display name, Reply-To (if configured), To, Subject, Date, a deterministic
  Message-ID per subscriber and date, List-Id, List-Unsubscribe (+ One-Click
  POST, RFC 8058), Auto-Submitted and optional DKIM. No header can be
  injected: CR/LF never reach one.

The send loop (`digest.deliver`) asks `DigestMailer.delivery_message` for each
claimed row's message; `digest preview` and the web front ask `preview`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal, overload

import sqlalchemy
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from digest import db
from digest.assemble import Part
from digest.cache import BoundedCache
from digest.config import DigestSettings, MailConfig
from digest.links import subscriber_links
from digest.models import Delivery, Paper, Subscriber
from digest.preferences import sendable_address
from digest.render import Notice, RenderedDigest, Renderer, personalize_html, personalize_text
from digest.select import DigestContent, digest_content
from digest.sources.records import one_line
from digest.transport import Encoded
from digest.views import ItemLike, Recipient, has_placeholder, liked_titles, topic_titles
from digest.wire import (
    MAIL_POLICY,
    PLAIN_ADDRESS,
    PLAIN_URL,
    PLAIN_WORDS,
    SKELETON_HTML_LINE,
    SKELETON_ID,
    SKELETON_SENT_AT,
    SKELETON_SUBJECT_TEXT,
    SKELETON_TEXT_LINE,
    SKELETON_TO,
    SKELETON_URL,
    Skeleton,
    encode_lines,
    subject_line,
)

RENDER_CACHE = 64  # renderings kept (the most recent digests)
PAPER_CACHE = 2048  # papers kept (a day's digests show a few hundred distinct papers)
SUBJECT_CACHE = 4096  # encoded Subject lines kept
# Encoded shared pieces kept: two per paper card (HTML, text; a few KB each), one per topic
# heading and "N more matched" row, and the frame's fixed lines. A day's digests show a few
# hundred distinct cards.
PIECE_CACHE = 8192

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
    # Recent digests' renderings, and their message skeletons (each a few hundred KB at
    # most): deliveries come in plan order, so the same content tends to come in runs.
    _cache: BoundedCache[tuple[str, bool], RenderedDigest] = field(
        default_factory=lambda: BoundedCache(RENDER_CACHE), repr=False
    )
    _papers: BoundedCache[int, Paper] = field(
        default_factory=lambda: BoundedCache(PAPER_CACHE), repr=False
    )
    _skeleton: Skeleton | None = field(default=None, repr=False)
    _subjects: BoundedCache[str, bytes] = field(
        default_factory=lambda: BoundedCache(SUBJECT_CACHE), repr=False
    )
    # Shared body pieces, encoded (False: it holds a placeholder, so it is personalized).
    _pieces: BoundedCache[str, bytes | Literal[False]] = field(
        default_factory=lambda: BoundedCache(PIECE_CACHE), repr=False
    )

    def rendered(
        self,
        key: str,
        items: Sequence[ItemLike],
        papers: dict[int, Paper],
        digest_date: date,
        weekly: bool,
        more: Mapping[str, int] | None = None,
        liked: Mapping[str, str] | None = None,
    ) -> RenderedDigest:
        """The rendering of content `key` (e.g. the digest's content hash), made once."""

        def render() -> RenderedDigest:
            self.renders += 1
            return self.renderer.render(
                items,
                papers,
                digest_date=digest_date,
                weekly=weekly,
                more=more,
                base_url=self.base_url,
                liked=liked,
            )

        return self._cache.get((key, weekly), render)

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
        if (cached := self._cache.lookup((key, weekly))) is not None:
            return cached
        papers = self.papers(session, [item.paper_id for item in items])
        liked = liked_titles(session, {item.topic for item in items})
        return self.rendered(key, items, papers, digest_date, weekly, more, liked)

    def papers(self, session: Session, ids: Iterable[int]) -> dict[int, Paper]:
        """The papers of `ids`, each read once per mailer (a mailer serves one run: a send,
        a preview), as it was when first read."""
        return self._papers.get_many(
            ids,
            lambda missing: {
                paper_id: _detached(paper)
                for paper_id, paper in db.papers_by_id(session, missing).items()
            },
        )

    def warm(
        self,
        session: Session,
        digests: Sequence[tuple[int, bool]],
        items: Mapping[int, Sequence[ItemLike]] | None = None,
    ) -> int:
        """Inline the paper cards of these (digest id, weekly) in few premailer runs
        (`items`: their items by digest id, if the caller read them already)."""
        if not digests:
            return 0
        if items is None:
            items = db.digest_items(session, (digest_id for digest_id, _ in digests))
        papers = self.papers(session, {i.paper_id for group in items.values() for i in group})
        return self.renderer.warm(
            ((items.get(digest_id, []), weekly) for digest_id, weekly in digests),
            papers,
            self.base_url,
        )

    @overload
    def delivery_message(
        self,
        session: Session,
        delivery: Delivery,
        sent_at: datetime,
        *,
        items: Sequence[ItemLike] | None = None,
    ) -> EmailMessage: ...

    @overload
    def delivery_message(
        self,
        session: Session,
        delivery: Delivery,
        sent_at: datetime,
        *,
        encoded: Literal[True],
        items: Sequence[ItemLike] | None = None,
    ) -> Encoded: ...

    def delivery_message(
        self,
        session: Session,
        delivery: Delivery,
        sent_at: datetime,
        *,
        encoded: bool = False,
        items: Sequence[ItemLike] | None = None,
    ) -> EmailMessage | Encoded:
        """The message of a planned delivery, for its subscriber (`encoded`: as bytes).

        `items` are its digest's items when the caller read them already
        (`db.digest_items`); otherwise they are loaded when the digest is not cached.

        `Unsendable` if the digest cannot be rendered (shared by everyone who gets
        the same content: worth retrying once the cause is fixed) or this
        recipient's message cannot be built (e.g. an address no longer valid).
        Database errors pass through.
        """
        digest = delivery.digest
        subscriber = delivery.subscriber
        if digest is None:
            raise Unsendable("the delivery has no digest to send", retry=False)
        weekly = subscriber.weekday is not None
        try:
            rendered = self._cache.lookup((digest.content_hash, weekly)) or self.render_items(
                session,
                digest.content_hash,
                list(digest.items) if items is None else items,
                digest.digest_date,
                weekly,
                json.loads(digest.more_matched or "{}"),
            )
        except SQLAlchemyError:
            raise
        except Exception as exc:
            reason = f"the digest could not be rendered: {describe(exc)}"
            raise Unsendable(reason, retry=True) from exc
        try:
            if encoded:
                return self.encoded(subscriber, rendered, digest.digest_date, sent_at, digest.id)
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
            topics=topic_titles(subscriber, weekly),
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
        return build_message(
            mail=self.mail,
            to=subscriber.email,
            subject=rendered.subject,
            html=html,
            text=text,
            msgid=self.message_id(subscriber, digest_date),
            sent_at=sent_at,
            unsubscribe_url=recipient.unsubscribe_url,
            dkim=self.dkim,
        )

    def message_id(self, subscriber: Subscriber, digest_date: date) -> str:
        return message_id(subscriber, digest_date, self.mail.from_address.rpartition("@")[2])

    def encoded(
        self,
        subscriber: Subscriber,
        rendered: RenderedDigest,
        digest_date: date,
        sent_at: datetime,
        digest_id: int | None = None,
    ) -> Encoded:
        """`message(...)` as the bytes it serializes to, assembled from cached parts.

        A skeleton (the headers and MIME structure, with slots for the subject, the
        recipient's headers and the bodies) is serialized once. A body is the
        concatenation of its pieces (`RenderedDigest.html_parts`, `text_parts`), each
        shared piece (a card, a topic heading, the frame's fixed lines) quoted-printable
        encoded once per run: the encoding is line by line, and pieces are whole lines.
        So a recipient costs the substitution and encoding of the few lines that hold
        their values. Messages the skeleton cannot stand for (DKIM, an address that is
        not plain ASCII) are built whole.
        """
        address = sendable_address(subscriber.email)
        recipient = self.recipient(subscriber, digest_id)
        unsubscribe = recipient.unsubscribe_url
        if (
            self.dkim is not None
            or not PLAIN_ADDRESS.fullmatch(address)
            or not PLAIN_URL.fullmatch(unsubscribe)
            or len(unsubscribe) > 500
        ):
            return Encoded.of(self.message(subscriber, rendered, digest_date, sent_at, digest_id))
        values = recipient.values()
        html_parts = rendered.html_parts or (Part(rendered.html, False),)
        text_parts = rendered.text_parts or (Part(rendered.text, False),)
        if self._skeleton is None:
            self._skeleton = Skeleton.of(self._skeleton_message())
        subject = self._subject_line(rendered.subject)
        data = self._skeleton.fill(
            subject=subject,
            to=address.encode("ascii"),
            date=format_datetime(sent_at).encode("ascii"),
            msgid=self.message_id(subscriber, digest_date).encode("ascii"),
            url=unsubscribe.encode("ascii"),
            text=self._body(text_parts, lambda text: personalize_text(text, values)),
            html=self._body(html_parts, lambda markup: personalize_html(markup, values)),
        )
        return Encoded(self.mail.from_address, address, data)

    def _subject_line(self, subject: str) -> bytes:
        """`subject_line(subject)`, the folding of its start done once: a subject's words
        after its last non-ASCII one (the digest's topics) are written as they are."""
        subject = one_line(subject)
        last = max((subject.rfind(c) for c in set(subject) if not c.isascii()), default=-1)
        space = subject.find(" ", last)
        rest = subject[space + 1 :]
        if last < 0 or space < 0 or len(subject) > 200 or not PLAIN_WORDS.fullmatch(rest):
            return self._subjects.get(subject, lambda: subject_line(subject))
        probe = subject[:space] + " x"  # the start, and a word written as it is
        start = self._subjects.get(probe, lambda: subject_line(probe))
        if not start.endswith(b" x\r\n"):
            return self._subjects.get(subject, lambda: subject_line(subject))
        return start[:-3] + rest.encode("ascii") + b"\r\n"

    def _skeleton_message(self) -> bytes:
        message = build_message(
            mail=self.mail,
            to=SKELETON_TO.decode(),
            subject=SKELETON_SUBJECT_TEXT,
            html=SKELETON_HTML_LINE,
            text=SKELETON_TEXT_LINE,
            msgid=SKELETON_ID.decode(),
            sent_at=SKELETON_SENT_AT,
            unsubscribe_url=SKELETON_URL.decode(),
        )
        return message.as_bytes()

    def _body(self, parts: Sequence[Part], personalize: Callable[[str], str]) -> bytes:
        """The quoted-printable body made of `parts`, as `set_content` encodes it.

        A shared piece that starts and ends a line is encoded once (and cached); the
        text between such pieces is personalized and encoded here. A shared piece
        holding a placeholder (a feed can write anything) counts as the digest's own.
        """
        out: list[bytes] = []
        pending: list[str] = []  # text since the last piece encoded
        at_line_start = True
        for text, shared in parts:
            if not text:
                continue
            if shared and at_line_start and text.endswith("\n"):
                encoded = self._piece(text)
                if encoded is not False:
                    done = self._own("".join(pending), personalize) if pending else b""
                    if done is not None:
                        out += (done, encoded)
                        pending.clear()
                        continue
            pending.append(text)
            at_line_start = text.endswith("\n")
        if pending:
            done = self._own("".join(pending), personalize, last=True)
            assert done is not None
            out.append(done)
        return b"".join(out)

    def _piece(self, text: str) -> bytes | Literal[False]:
        """A shared piece, encoded once; False if it holds a placeholder."""
        if (encoded := self._pieces.lookup(text)) is None:
            encoded = False if has_placeholder(text) else encode_lines(text)
            self._pieces.put(text, encoded)
        return encoded

    def _own(
        self, text: str, personalize: Callable[[str], str], last: bool = False
    ) -> bytes | None:
        """Text between shared pieces (or `last` in the body), personalized and encoded;
        None if it no longer ends a line (dropping the greeting can join lines)."""
        if has_placeholder(text):
            text = personalize(text)
            if not text:
                return b""
            if not (last or text.endswith("\n")):
                return None
        return encode_lines(text)


def _detached(paper: Paper) -> Paper:
    """A copy of `paper`'s columns that belongs to no session, so it never expires (a
    rollback expires what a session holds) and never loads anything."""
    columns = sqlalchemy.inspect(Paper).column_attrs
    return Paper(**{column.key: getattr(paper, column.key) for column in columns})
