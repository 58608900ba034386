"""Delivery through a real SMTP server (aiosmtpd over TCP): the ledger, faults, headers."""

from __future__ import annotations

import base64
import json
import mailbox
import random
import re
import ssl
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import trustme
from sqlalchemy import event, select

from digest import db
from digest import ledger as delivery_ledger
from digest.config import DeliveryConfig, DigestSettings, MailConfig, SmtpConfig
from digest.deliver import Sender, send_digests
from digest.ingest import ingest_inputs
from digest.links import token_payload, verify_token
from digest.message import DigestMailer, Dkim, build_message
from digest.models import Delivery, Subscriber
from digest.plan import plan_deliveries
from digest.render import Renderer
from digest.subscribers import subscribe
from digest.transport import MaildirTransport, MemoryTransport, SmtpTransport
from tests.smtp_server import SmtpServer

NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
MAIL = MailConfig(
    "digest@papers.example.org", "Papers Digest", "team@papers.example.org", "1 Rue Example"
)
SECRET = "site-secret-key-for-tests-0123456789"
EMAILS = [f"reader{n}@example.org" for n in range(5)]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def readers(factory, tmp_path: Path) -> list[str]:
    """Three diffusion papers seen an hour ago and five subscribers to them."""
    items = [
        {
            "title": f"Diffusion Paper {n}",
            "summary": f"Diffusion study {n}.",
            "paper": {"id": f"2603.0000{n}", "upvotes": n},
        }
        for n in range(3)
    ]
    capture = tmp_path / "capture.json"
    capture.write_text(json.dumps(items), encoding="utf-8")
    ingest_inputs(factory, [str(capture)], now=NOW - timedelta(hours=1), max_bytes=10**6)
    with db.transaction(factory) as session:
        for address in EMAILS:
            subscribe(session, address, ["Diffusion=diffusion"], now=NOW - timedelta(days=1))
    return EMAILS


def smtp_settings(server: SmtpServer, **changes) -> SmtpConfig:
    base = SmtpConfig(
        host="127.0.0.1",
        port=server.port,
        username=None,
        password=None,
        starttls=False,
        ssl=False,
        timeout=5,
    )
    return replace(base, **changes)


def make_sender(factory, transport, clock=None, **config) -> Sender:
    mailer = DigestMailer(Renderer(), MAIL, "https://digest.example.org", SECRET)
    return Sender(
        factory=factory,
        transport=transport,
        mailer=mailer,
        config=replace(DeliveryConfig(), **config),
        clock=clock or Clock(NOW),
        rng=random.Random(7),
    )


def active(session):
    return [(s, NOW.date()) for s in db.list_subscribers(session, "active")]


def active_on(day: date):
    return lambda session: [(s, day) for s in db.list_subscribers(session, "active")]


def send(sender: Sender, now: datetime = NOW, **options):
    due = active_on(now.date())
    return send_digests(sender, due, now=now, settings=DigestSettings(), **options)


def ledger(factory) -> dict[str, tuple[str, int]]:
    with factory() as session:
        return {
            d.subscriber.email: (d.status, d.attempts)
            for d in session.scalars(select(Delivery).order_by(Delivery.id))
        }


def test_each_subscriber_gets_one_well_formed_digest(factory, readers, smtp_server) -> None:
    sender = make_sender(factory, SmtpTransport(smtp_settings(smtp_server)))
    report = send(sender)
    assert (report.sent, report.failed, report.deferred, report.unknown) == (5, 0, 0, 0)
    assert sorted(smtp_server.handler.recipients()) == sorted(EMAILS)
    assert ledger(factory) == {address: ("sent", 1) for address in EMAILS}
    # A rerun the same day sends nothing.
    again = send(make_sender(factory, SmtpTransport(smtp_settings(smtp_server))))
    assert again.sent == 0 and len(smtp_server.handler.messages) == 5
    with factory() as session:
        ids = {s.email: s.id for s in session.scalars(select(Subscriber))}
        secrets = {s.email: s.secret for s in session.scalars(select(Subscriber))}
        sent_at = {d.subscriber.email: d.sent_at for d in session.scalars(select(Delivery))}
    assert set(sent_at.values()) == {NOW}
    for raw_rcpts, raw in smtp_server.handler.messages:
        message = message_from_bytes(raw, policy=policy.default)
        to = message["To"]
        assert raw_rcpts == [to]
        assert message["From"] == "Papers Digest <digest@papers.example.org>"
        assert message["Reply-To"] == "team@papers.example.org"
        assert message["Subject"] == "Daily Papers · Mon 2 Mar · 3 new in Diffusion"
        assert message["Date"] == "Mon, 02 Mar 2026 07:00:00 +0000"
        assert message["Message-ID"].startswith(f"<digest.20260302.{ids[to]}.")
        assert message["Message-ID"].endswith("@papers.example.org>")
        assert message["List-Id"] == "Papers Digest <digest.papers.example.org>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe = message["List-Unsubscribe"]
        assert unsubscribe.startswith("<https://digest.example.org/unsubscribe/")
        assert unsubscribe.endswith(">")
        token = unsubscribe[1:-1].rsplit("/", 1)[1]
        assert token_payload(token) == ids[to]
        assert verify_token(SECRET, secrets[to], "unsubscribe", token) == ids[to]
        assert verify_token(SECRET, "another-secret", "unsubscribe", token) is None
        # The header is on one line in the raw message, not folded.
        header_line = next(
            line for line in raw.split(b"\r\n") if line.startswith(b"List-Unsubscribe:")
        )
        assert header_line.decode() == f"List-Unsubscribe: {unsubscribe}"
        assert message.get_content_type() == "multipart/alternative"
        plain, html = message.get_body(("plain",)), message.get_body(("html",))
        assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
        assert plain.get_content().count("\n* Diffusion Paper") == 3
        assert to in html.get_content() and unsubscribe[1:-1] in html.get_content()


def test_starttls_with_auth(factory, readers) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with SmtpServer(tls_context=server_context, credentials=("digest", "s3cret")) as server:
        good = smtp_settings(server, starttls=True, username="digest", password="s3cret")
        report = send(make_sender(factory, SmtpTransport(good, ssl_context=client_context)))
        assert report.sent == 5 and report.fatal is None
        assert len(server.handler.messages) == 5


def test_bad_password_stops_the_run_and_keeps_everything_queued(factory, readers) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with SmtpServer(tls_context=server_context, credentials=("digest", "s3cret")) as server:
        bad = smtp_settings(server, starttls=True, username="digest", password="wrong")
        report = send(make_sender(factory, SmtpTransport(bad, ssl_context=client_context)))
        assert report.fatal is not None and report.fatal.startswith(
            "SMTP authentication failed: 535"
        )
        assert report.sent == 0 and server.handler.messages == []
        assert ledger(factory) == {address: ("queued", 0) for address in EMAILS}
        # An untrusted certificate is a TLS failure, also fatal.
        untrusted = smtp_settings(server, starttls=True, username="digest", password="s3cret")
        report = send(make_sender(factory, SmtpTransport(untrusted)))
        assert report.fatal is not None and "TLS with 127.0.0.1" in report.fatal
        assert ledger(factory) == {address: ("queued", 0) for address in EMAILS}


def test_a_server_without_starttls_or_auth_says_which_setting_to_change(factory, readers) -> None:
    with SmtpServer() as server:  # plain aiosmtpd: no STARTTLS, no AUTH
        report = send(make_sender(factory, SmtpTransport(smtp_settings(server, starttls=True))))
        assert report.fatal == (
            f"SMTP server 127.0.0.1:{server.port} does not offer STARTTLS: set smtp.ssl = true "
            "if it speaks TLS from the start (port 465), or smtp.starttls = false for a server "
            "without TLS"
        )
        login = smtp_settings(server, username="digest", password="s3cret")
        report = send(make_sender(factory, SmtpTransport(login)))
        assert report.fatal == (
            f"SMTP server 127.0.0.1:{server.port} does not offer AUTH (login), but "
            "smtp.username is set: set smtp.starttls = true if it takes logins only over TLS "
            "(most servers), or unset it"
        )
        assert report.sent == 0 and server.handler.messages == []
        assert ledger(factory) == {address: ("queued", 0) for address in EMAILS}


def test_refused_connection_is_one_clear_error(factory, readers) -> None:
    from tests.smtp_server import free_port

    closed = SmtpConfig("127.0.0.1", free_port(), None, None, False, False, 2)
    report = send(make_sender(factory, SmtpTransport(closed)))
    assert report.fatal is not None and report.fatal.startswith("cannot connect to SMTP 127.0.0.1:")
    assert ledger(factory) == {address: ("queued", 0) for address in EMAILS}


def test_policy_refusal_stops_the_run(factory, readers, smtp_server) -> None:
    smtp_server.handler.mail_reply = "550 5.7.1 Sender not authorized"
    report = send(make_sender(factory, SmtpTransport(smtp_settings(smtp_server))))
    assert report.fatal == (
        f"SMTP server 127.0.0.1:{smtp_server.port} refused the sender "
        "digest@papers.example.org: 550 5.7.1 Sender not authorized"
    )
    assert smtp_server.handler.mails == 1  # it did not burn through every subscriber
    assert ledger(factory) == {address: ("queued", 0) for address in EMAILS}


def test_temporary_failure_is_deferred_then_retried(factory, readers, smtp_server) -> None:
    smtp_server.handler.rcpt_replies["reader1@example.org"] = "450 4.2.1 Mailbox busy, try later"
    clock = Clock(NOW)
    report = send(make_sender(factory, SmtpTransport(smtp_settings(smtp_server)), clock))
    assert (report.sent, report.deferred) == (4, 1)
    assert not report.ok
    with factory() as session:
        row = session.scalars(select(Delivery).where(Delivery.status == "deferred")).one()
        assert row.last_reply == "450 4.2.1 Mailbox busy, try later"
        # retry_base 60 s, attempt 1, jitter up to +50 %.
        assert NOW + timedelta(seconds=60) <= row.next_attempt_at <= NOW + timedelta(seconds=90)
        retry_at = row.next_attempt_at
    # Too early: nothing is retried.
    clock.now = NOW + timedelta(seconds=30)
    assert (
        send(make_sender(factory, SmtpTransport(smtp_settings(smtp_server)), clock), clock.now).sent
        == 0
    )
    del smtp_server.handler.rcpt_replies["reader1@example.org"]
    clock.now = retry_at + timedelta(seconds=1)
    later = send(make_sender(factory, SmtpTransport(smtp_settings(smtp_server)), clock), clock.now)
    assert (later.sent, later.deferred) == (1, 0) and later.ok
    assert ledger(factory)["reader1@example.org"] == ("sent", 2)
    assert sorted(smtp_server.handler.recipients()) == sorted(EMAILS)


def test_temporary_failures_give_up_when_the_day_is_over(factory, readers, smtp_server) -> None:
    smtp_server.handler.rcpt_replies["reader2@example.org"] = "451 4.7.0 Try again later"
    late = datetime(2026, 3, 2, 23, 59, 30, tzinfo=UTC)
    report = send(
        make_sender(factory, SmtpTransport(smtp_settings(smtp_server)), Clock(late)), late
    )
    assert report.failed == 1
    with factory() as session:
        row = session.scalars(select(Delivery).where(Delivery.status == "failed")).one()
        assert row.last_reply == "gave up, the day is over: 451 4.7.0 Try again later"


def test_permanent_failure_bounces_the_subscriber(factory, readers, smtp_server) -> None:
    smtp_server.handler.rcpt_replies["reader3@example.org"] = "550 5.1.1 No such user"
    report = send(make_sender(factory, SmtpTransport(smtp_settings(smtp_server))))
    assert (report.sent, report.failed, report.bounced) == (4, 1, ["reader3@example.org"])
    with factory() as session:
        bounced = db.find_subscriber(session, "reader3@example.org")
        assert bounced is not None and bounced.status == "bounced"
    assert ledger(factory)["reader3@example.org"] == ("failed", 1)
    # The next day the bounced address is skipped.
    tomorrow = NOW + timedelta(days=1)
    send(make_sender(factory, SmtpTransport(smtp_settings(smtp_server)), Clock(tomorrow)), tomorrow)
    assert "reader3@example.org" not in smtp_server.handler.recipients()


def test_dropped_connection_reconnects_and_continues(factory, readers, smtp_server) -> None:
    smtp_server.handler.drop_before_mail = {3}
    report = send(make_sender(factory, SmtpTransport(smtp_settings(smtp_server))))
    assert report.sent == 5 and report.ok
    assert sorted(smtp_server.handler.recipients()) == sorted(EMAILS)


def test_connection_reuse_and_rate_limit(factory, readers, smtp_server) -> None:
    sleeps: list[float] = []
    ticks = iter(float(n) * 0.1 for n in range(100))
    transport = SmtpTransport(
        smtp_settings(smtp_server),
        max_per_connection=2,
        rate=2.0,
        monotonic=lambda: next(ticks),
        sleep=sleeps.append,
    )
    connects = []
    original = transport._connect

    def counting():
        connects.append(1)
        return original()

    transport._connect = counting
    report = send(make_sender(factory, transport))
    assert report.sent == 5
    assert len(connects) == 3  # 2 + 2 + 1 messages
    # 2 messages per second: each later message waits what is left of 0.5 s.
    assert len(sleeps) == 4 and all(0.3 < s <= 0.5 for s in sleeps)


def test_crash_after_acceptance_is_unknown_and_not_resent(factory, readers, smtp_server) -> None:
    lease = 600
    with db.transaction(factory) as session:
        dates, _, _ = plan_deliveries(session, active(session), now=NOW, settings=DigestSettings())
        # A sender claims a row, the server accepts it, and the process dies unmarked.
        claimed = delivery_ledger.claim(session, NOW, NOW + timedelta(seconds=lease), dates)
    assert claimed is not None
    # Before the lease ends the row is left alone; after, it is unknown and not resent.
    soon = NOW + timedelta(seconds=60)
    report = send(
        make_sender(factory, SmtpTransport(smtp_settings(smtp_server)), Clock(soon)), soon
    )
    assert report.sent == 4
    later = NOW + timedelta(seconds=lease + 1)
    report = send(
        make_sender(factory, SmtpTransport(smtp_settings(smtp_server)), Clock(later)), later
    )
    assert (report.sent, report.unknown) == (0, 1) and not report.ok
    statuses = sorted(status for status, _ in ledger(factory).values())
    assert statuses == ["sent"] * 4 + ["unknown"]
    # Resending unknown rows is a deliberate choice.
    again = send(
        make_sender(factory, SmtpTransport(smtp_settings(smtp_server)), Clock(later)),
        later,
        retry_unknown=True,
    )
    assert (again.sent, again.unknown) == (1, 0)
    assert sorted(smtp_server.handler.recipients()) == sorted(EMAILS)


def test_dry_run_renders_everything_and_records_nothing(factory, readers) -> None:
    transport = MemoryTransport()
    report = send(make_sender(factory, transport), dry_run=True)
    assert (report.sent, report.dry_run) == (5, True)
    assert report.line().startswith("would send 5,")
    assert transport.messages == [] and ledger(factory) == {}


def test_dry_run_reads_in_batches_not_per_subscriber(factory, engine, readers) -> None:
    def statements_for_dry_run() -> int:
        statements: list[str] = []

        def listener(conn, cursor, statement, *rest) -> None:
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", listener)
        try:
            report = send(make_sender(factory, MemoryTransport()), dry_run=True)
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        with factory() as session:
            assert report.sent == len(db.list_subscribers(session, "active"))
        return len(statements)

    five = statements_for_dry_run()
    with db.transaction(factory) as session:
        for n in range(25):
            subscribe(session, f"more{n}@example.org", ["diffusion"], now=NOW - timedelta(days=1))
    # Thirty subscribers (two digests) read with as many statements as five: their
    # subscriber rows, topics and digests are loaded with the batch, not one by one.
    assert statements_for_dry_run() <= five + 2


def test_limit_sends_at_most_n(factory, readers) -> None:
    transport = MemoryTransport()
    assert send(make_sender(factory, transport), limit=2).sent == 2
    assert len(transport.messages) == 2
    assert send(make_sender(factory, transport)).sent == 3


def test_maildir_outbox(factory, readers, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    report = send(make_sender(factory, MaildirTransport(outbox)))
    assert report.sent == 5
    box = mailbox.Maildir(outbox, create=False)
    messages = [
        message_from_bytes(box.get_bytes(key), policy=policy.default) for key in box.iterkeys()
    ]
    assert sorted(m["To"] for m in messages) == sorted(EMAILS)
    assert all(m["Subject"] == "Daily Papers · Mon 2 Mar · 3 new in Diffusion" for m in messages)


def simple_message(**changes):
    fields = dict(
        mail=MAIL,
        to="reader@example.org",
        subject="Daily Papers · Mon 2 Mar",
        html="<p>hello</p>",
        text="hello",
        msgid="<x@papers.example.org>",
        sent_at=NOW,
        unsubscribe_url="https://digest.example.org/u/abc",
    )
    return build_message(**(fields | changes))


def test_list_unsubscribe_can_carry_a_mailto_too() -> None:
    mail = replace(MAIL, unsubscribe_mailto="leave@papers.example.org")
    message = message_from_bytes(simple_message(mail=mail).as_bytes(), policy=policy.default)
    assert message["List-Unsubscribe"] == (
        "<https://digest.example.org/u/abc>, <mailto:leave@papers.example.org?subject=unsubscribe>"
    )


def test_header_injection_is_neutralized() -> None:
    message = simple_message(
        mail=replace(MAIL, from_name="Papers\r\nBcc: victim@evil.example"),
        subject="Digest\r\nBcc: victim@evil.example\nX-Injected: 1",
    )
    raw = message.as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Bcc"] is None and parsed["X-Injected"] is None
    assert parsed["Subject"] == "Digest Bcc: victim@evil.example X-Injected: 1"
    assert parsed["From"].addresses[0].addr_spec == "digest@papers.example.org"
    with pytest.raises(ValueError):
        simple_message(msgid="<x@papers.example.org>\r\nBcc: a@b.c")


def dkim_key() -> tuple[bytes, bytes]:
    """(PEM private key, the DNS TXT record publishing its public half)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


@pytest.mark.parametrize("to", ["reader@example.org", "josé@exämple.org"])
def test_dkim_signature_verifies(to: str) -> None:
    import dkim

    private, record = dkim_key()
    message = simple_message(to=to, dkim=Dkim("digest", "papers.example.org", private))
    raw = message.as_bytes()
    signature = message["DKIM-Signature"]
    signed = signature.split("h=")[1].split(";")[0].replace(" ", "").split(":")
    assert signed == ["from", "to", "subject", "date", "list-unsubscribe", "list-unsubscribe-post"]
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record)


@pytest.mark.parametrize(
    ("to", "header", "utf8"),
    [
        ("Reader@Example.ORG", b"To: Reader@example.org", False),
        ("bob@exämple.org", b"To: bob@xn--exmple-cua.org", False),  # IDN domain: punycode
        ("bob@xn--exmple-cua.org", b"To: bob@xn--exmple-cua.org", False),
        ("josé@exämple.org", "To: josé@exämple.org".encode(), True),  # needs SMTPUTF8
    ],
)
def test_recipient_addresses_on_the_wire(to: str, header: bytes, utf8: bool) -> None:
    message = simple_message(to=to)
    raw = message.as_bytes()
    assert header in raw.split(b"\r\n")
    assert message.policy.utf8 is utf8
    assert raw.isascii() is not utf8


@pytest.mark.parametrize("to", ["a..b@example.org", "a@b", "x@example.org\r\nBcc: y@evil.org"])
def test_an_invalid_recipient_address_is_refused(to: str) -> None:
    with pytest.raises(ValueError, match="invalid email address"):
        simple_message(to=to)


def test_bidirectional_controls_never_reach_a_header() -> None:
    message = simple_message(subject="Daily \u202eseirolaM\u202c in \u2066Diffusion\u2069")
    assert message["Subject"] == "Daily seirolaM in Diffusion"
    assert "\u202e" not in message.as_string()


def test_the_maildir_outbox_and_its_missing_parents_are_created(tmp_path: Path) -> None:
    outbox = tmp_path / "not" / "there" / "outbox"
    reply = MaildirTransport(outbox).send(simple_message(to="josé@exämple.org"))
    [stored] = (outbox / "new").iterdir()
    assert reply == f"250 stored in {stored}"
    assert "To: josé@exämple.org".encode() in stored.read_bytes()
    assert (outbox.stat().st_mode & 0o777, outbox.parent.stat().st_mode & 0o777) == (0o700, 0o700)


class ExplodingTransport(MemoryTransport):
    def send(self, message):
        raise KeyboardInterrupt


def test_an_interrupted_send_is_unknown_not_requeued(factory, readers) -> None:
    with pytest.raises(KeyboardInterrupt):
        send(make_sender(factory, ExplodingTransport()))
    rows = ledger(factory)
    assert sorted(rows.values()) == [("queued", 0)] * 4 + [("unknown", 1)]


class InterruptedAtRcpt(SmtpTransport):
    """Ctrl-C while the server has not yet seen the message (at RCPT)."""

    commands = 0

    def _command(self, call):
        self.commands += 1
        if self.commands == 2:  # MAIL went through; RCPT is interrupted
            raise KeyboardInterrupt
        return super()._command(call)


def test_an_interrupt_before_the_message_was_sent_requeues(factory, readers, smtp_server) -> None:
    with pytest.raises(KeyboardInterrupt):
        send(make_sender(factory, InterruptedAtRcpt(smtp_settings(smtp_server))))
    assert sorted(ledger(factory).values()) == [("queued", 0)] * 5
    assert smtp_server.handler.messages == []


class BrokenForOne(MemoryTransport):
    """A transport with a bug that only one recipient's message triggers."""

    def send(self, message):
        if message["To"].addresses[0].addr_spec == "reader2@example.org":
            raise RuntimeError("bug in the transport")
        return super().send(message)

    def in_doubt(self) -> bool:
        return False


def test_an_unexpected_error_for_one_message_defers_it_and_the_run_goes_on(
    factory, readers
) -> None:
    transport = BrokenForOne()
    report = send(make_sender(factory, transport))
    assert (report.sent, report.deferred, report.fatal) == (4, 1, None)
    assert ledger(factory)["reader2@example.org"] == ("deferred", 1)
    with factory() as session:
        row = session.scalars(select(Delivery).where(Delivery.status == "deferred")).one()
    assert row.last_reply == "could not be sent: RuntimeError: bug in the transport"


def test_items_read_as_rows_build_the_same_message(factory, readers) -> None:
    """The send loop reads digest items as plain rows (`db.digest_items`): the message
    is byte for byte the one built from the `DigestItem` entities."""
    with db.transaction(factory) as session:
        plan_deliveries(session, active(session), now=NOW, settings=DigestSettings())
    with factory() as session:
        deliveries = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        rows = db.digest_items(session, {d.digest_id for d in deliveries if d.digest_id})
        assert [len(rows[d.digest_id]) for d in deliveries if d.digest_id] == [3] * 5
        for delivery in deliveries:
            from_rows = make_sender(factory, MemoryTransport()).mailer.delivery_message(
                session, delivery, NOW, encoded=True, items=rows[delivery.digest_id]
            )
            from_entities = make_sender(factory, MemoryTransport()).mailer.delivery_message(
                session, delivery, NOW, encoded=True
            )
            boundary = re.compile(rb"===============\d+==")
            assert boundary.sub(b"B", from_rows.data) == boundary.sub(b"B", from_entities.data)
            assert [i.paper_id for i in rows[delivery.digest_id]] == [
                i.paper_id for i in delivery.digest.items
            ]
