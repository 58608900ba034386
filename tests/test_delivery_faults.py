"""Forty recipients through every fault the SMTP server can inject, one table row per fault.

Each row names the fault, sends today's digests to 40 subscribers through a
real aiosmtpd server over TCP, and checks for every recipient how many copies
the server stored and the status of its ledger row: one recipient's problem
stays that recipient's, a session's problem stops the run with one line, and
nothing that may have been delivered is sent again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from digest import db
from digest.config import DigestSettings
from digest.deliver import SESSION_STREAK, Sender, SendReport, send_digests
from digest.ingest import ingest_inputs
from digest.message import DigestMailer
from digest.models import Delivery, Subscriber
from digest.plan import DueList, plan_deliveries
from digest.preferences import sendable_address
from digest.render import Renderer
from digest.subscribers import subscribe
from digest.transport import SmtpTransport
from tests.smtp_server import Handler, SmtpServer, free_port
from tests.test_deliver import MAIL, NOW, SECRET, make_sender, smtp_settings

# The queue order is the subscribers' order by address (the rows are planned in it).
IDN = "bob@exämple.org"
UTF8 = "josé@exämple.org"
READERS = [f"r{n:02d}@example.org" for n in range(38)]
ORDER = [IDN, UTF8, *READERS]
# The client's SMTP timeout in the stall faults, and how long the server stalls: the
# timeout leaves room for a loaded machine's normal replies, the stall is well past it.
TIMEOUT = 2.0
STALL = 3 * TIMEOUT


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, databases) -> str:
    """A database with three diffusion papers and the 40 subscribers, copied per test."""
    folder = tmp_path_factory.mktemp("faults")
    capture = folder / "capture.json"
    items = [
        {
            "title": f"Diffusion Paper {n}",
            "summary": f"Diffusion {n}.",
            "paper": {"id": f"2603.1{n}"},
        }
        for n in range(3)
    ]
    capture.write_text(json.dumps(items), encoding="utf-8")
    url = databases.new(folder / "template")
    engine = db.open_database(url)
    factory = db.session_factory(engine)
    ingest_inputs(factory, [str(capture)], now=NOW - timedelta(hours=1), max_bytes=10**6)
    with db.transaction(factory) as session:
        for address in ORDER:
            subscribe(session, address, ["Diffusion=diffusion"], now=NOW - timedelta(days=1))
    with db.transaction(factory) as session:  # planned once here, sent by each test
        plan_deliveries(session, due(session), now=NOW, settings=DigestSettings())
    engine.dispose()
    return url


@dataclass
class Fault:
    """One row of the table: a fault, and what each recipient must end up with."""

    name: str
    inject: Callable[[Handler], None] = lambda handler: None
    server: dict[str, object] = field(default_factory=lambda: {"smtputf8": True})
    smtp: dict[str, object] = field(default_factory=dict)
    max_per_connection: int = 100
    # Overrides of the expected (status, copies) per address; by default ("sent", 1).
    expect: dict[str, tuple[str, int]] = field(default_factory=dict)
    stop_at: int | None = None  # from this position in the queue on, rows stay queued
    fatal: str | None = None  # how the one-line stop message starts
    bounced: tuple[str, ...] = ()
    replies: dict[str, str] = field(default_factory=dict)  # address: text in last_reply
    broken_template: bool = False
    invalid_address: str | None = None  # stored address made invalid behind the app's back
    closed_port: bool = False  # nothing listens where the transport connects


def everyone(replies: dict[str, str], reply: str) -> None:
    replies.update(dict.fromkeys(map(sendable_address, ORDER), reply))


def drop_after_store_for_all(handler: Handler) -> None:
    handler.drop_after_store.update(map(sendable_address, ORDER))


FAULTS = [
    Fault("clean run"),
    Fault(
        "no SMTPUTF8: a UTF-8 local part fails alone, an IDN domain goes as punycode",
        server={"smtputf8": False},
        expect={UTF8: ("failed", 0)},
        replies={UTF8: "does not offer SMTPUTF8, which the address josé@exämple.org needs"},
    ),
    Fault(
        "550 5.1.1 at RCPT bounces that address",
        inject=lambda h: h.rcpt_replies.update({"r05@example.org": "550 5.1.1 No such user"}),
        expect={"r05@example.org": ("failed", 0)},
        bounced=("r05@example.org",),
        replies={"r05@example.org": "550 5.1.1 No such user"},
    ),
    Fault(
        "450 4.2.1 at RCPT defers that row",
        inject=lambda h: h.rcpt_replies.update({"r06@example.org": "450 4.2.1 Mailbox busy"}),
        expect={"r06@example.org": ("deferred", 0)},
        replies={"r06@example.org": "450 4.2.1 Mailbox busy"},
    ),
    Fault(
        "550 5.7.1 at RCPT for one recipient fails that row only, no bounce",
        inject=lambda h: h.rcpt_replies.update({"r07@example.org": "550 5.7.1 Blocked by policy"}),
        expect={"r07@example.org": ("failed", 0)},
        replies={"r07@example.org": "550 5.7.1 Blocked by policy"},
    ),
    Fault(
        "554 5.7.1 after DATA (content refused) fails that row only",
        inject=lambda h: h.data_replies.update({"r08@example.org": "554 5.7.1 Looks like spam"}),
        expect={"r08@example.org": ("failed", 0)},
        replies={"r08@example.org": "554 5.7.1 Looks like spam"},
    ),
    Fault(
        "451 4.3.0 after DATA defers that row",
        inject=lambda h: h.data_replies.update({"r09@example.org": "451 4.3.0 Try later"}),
        expect={"r09@example.org": ("deferred", 0)},
    ),
    Fault(
        "connection dropped after the server stored it: unknown, never resent",
        inject=lambda h: h.drop_after_store.add("r10@example.org"),
        expect={"r10@example.org": ("unknown", 1)},
        replies={"r10@example.org": "no reply after the message was sent"},
    ),
    Fault(
        "connection dropped after the body, before storing: unknown too (no way to tell)",
        inject=lambda h: h.drop_before_store.add("r11@example.org"),
        expect={"r11@example.org": ("unknown", 0)},
    ),
    Fault(
        "connection dropped once at RCPT (before DATA): reconnected and sent once",
        inject=lambda h: h.drop_at_rcpt.update({"r12@example.org": 1}),
    ),
    Fault(
        "connection dropped at RCPT on every try: that row deferred",
        inject=lambda h: h.drop_at_rcpt.update({"r13@example.org": 5}),
        expect={"r13@example.org": ("deferred", 0)},
        replies={"r13@example.org": "connection lost before the message was sent"},
    ),
    Fault(
        "connection dropped before the third MAIL FROM: reconnected",
        inject=lambda h: h.drop_before_mail.add(3),
    ),
    Fault(
        "server stalls at RCPT past the timeout: retried once, then deferred",
        inject=lambda h: h.stall_rcpt.update({"r14@example.org": STALL}),
        smtp={"timeout": TIMEOUT},
        expect={"r14@example.org": ("deferred", 0)},
    ),
    Fault(
        "server stores it and stalls past the timeout: unknown, not resent",
        inject=lambda h: h.hold.update({"r15@example.org": STALL}),
        smtp={"timeout": TIMEOUT},
        expect={"r15@example.org": ("unknown", 1)},
    ),
    Fault(
        "a stored address no longer valid: that message cannot be built, that row fails",
        invalid_address="r16@example.org",
        expect={"r16@example.org": ("failed", 0)},
        replies={"r16@example.org": "the message could not be built: SubscriberError"},
    ),
    Fault(
        "AUTH fails from the second login on: the run stops, the rest stay queued",
        server={"smtputf8": True, "credentials": ("digest", "s3cret"), "logins_allowed": 1},
        smtp={"username": "digest", "password": "s3cret"},
        max_per_connection=10,
        stop_at=10,
        fatal="SMTP authentication failed: 535",
    ),
    Fault(
        "sender refused at MAIL FROM (5.7.0): the run stops at once",
        inject=lambda h: setattr(h, "mail_reply", "550 5.7.0 Sender blocked"),
        stop_at=0,
        fatal="SMTP server 127.0.0.1:{port} refused the sender digest@papers.example.org: "
        "550 5.7.0 Sender blocked",
    ),
    Fault(
        "421 at RCPT closes the session: the run stops, that row back in the queue",
        inject=lambda h: h.rcpt_replies.update({"r03@example.org": "421 4.7.0 Closing"}),
        stop_at=ORDER.index("r03@example.org"),
        fatal="the SMTP server closed the session at RCPT: 421 4.7.0 Closing",
    ),
    Fault(
        "554 5.7.1 at RCPT for everyone: a block of the sender, stopped after a streak",
        inject=lambda h: everyone(h.rcpt_replies, "554 5.7.1 Relay access denied"),
        expect=dict.fromkeys(ORDER[:SESSION_STREAK], ("deferred", 0)),
        stop_at=SESSION_STREAK,
        fatal=f"{SESSION_STREAK} recipients in a row failed the same way",
    ),
    Fault(
        "every message dropped after storing: a streak of unknowns stops the run",
        inject=drop_after_store_for_all,
        expect=dict.fromkeys(ORDER[:SESSION_STREAK], ("unknown", 1)),
        stop_at=SESSION_STREAK,
        fatal=f"{SESSION_STREAK} recipients in a row failed the same way",
    ),
    Fault(
        "connection refused: the run stops at once, everything stays queued",
        closed_port=True,
        stop_at=0,
        fatal="cannot connect to SMTP 127.0.0.1:{port}",
    ),
    Fault(
        "a broken template: rows deferred for a later run, stopped after a streak",
        broken_template=True,
        expect=dict.fromkeys(ORDER[:SESSION_STREAK], ("deferred", 0)),
        stop_at=SESSION_STREAK,
        fatal=f"{SESSION_STREAK} recipients in a row failed the same way",
        replies={IDN: "the digest could not be rendered: UndefinedError"},
    ),
]


def all_at_once(faults: list[Fault]) -> Fault:
    """The per-recipient faults of `faults` together in one run: no streak, no stop."""
    singles = [
        f
        for f in faults[1:]
        if f.stop_at is None and f.server == {"smtputf8": True} and not f.broken_template
    ]
    assert len(singles) == 13

    def inject(handler: Handler) -> None:
        for fault in singles:
            fault.inject(handler)

    return Fault(
        "every per-recipient fault in one run",
        inject=inject,
        smtp={"timeout": TIMEOUT},
        expect={a: e for f in singles for a, e in f.expect.items()},
        bounced=tuple(a for f in singles for a in f.bounced),
        replies={a: r for f in singles for a, r in f.replies.items()},
        invalid_address=next(f.invalid_address for f in singles if f.invalid_address),
    )


FAULTS.append(all_at_once(FAULTS))


def expected(fault: Fault) -> dict[str, tuple[str, int]]:
    result = {}
    for position, address in enumerate(ORDER):
        default = ("sent", 1)
        if fault.stop_at is not None and position >= fault.stop_at:
            default = ("queued", 0)
        result[address] = fault.expect.get(address, default)
    return result


def send_all(factory, transport) -> SendReport:
    return send_all_with(make_sender(factory, transport))


def due(session: Session) -> DueList:
    return [(s, NOW.date()) for s in db.list_subscribers(session, "active")]


def send_all_with(sender: Sender) -> SendReport:
    return send_digests(sender, due, now=NOW, settings=DigestSettings())


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_forty_recipients_through_a_fault(
    fault: Fault, template: str, tmp_path: Path, databases
) -> None:
    url = databases.clone(template, tmp_path / "data")
    engine = db.open_database(url)
    factory = db.session_factory(engine)
    with factory() as session:
        address_of = {s.id: s.email for s in session.scalars(select(Subscriber))}
    if fault.invalid_address:
        with db.transaction(factory) as session:
            session.execute(
                text("UPDATE subscribers SET email = :bad WHERE email = :good"),
                {"bad": fault.invalid_address.replace("@", "..@"), "good": fault.invalid_address},
            )
    with SmtpServer(**fault.server) as server:
        fault.inject(server.handler)
        settings = smtp_settings(server, **fault.smtp)
        if fault.closed_port:
            settings = replace(settings, port=free_port())
        transport = SmtpTransport(settings, max_per_connection=fault.max_per_connection)
        sender = make_sender(factory, transport)
        if fault.broken_template:
            templates = tmp_path / "templates"
            templates.mkdir()
            (templates / "digest.html.j2").write_text("{{ no_such_variable }}", encoding="utf-8")
            renderer = Renderer(templates=templates)
            sender.mailer = DigestMailer(renderer, MAIL, "https://digest.example.org", SECRET)
        report = send_all_with(sender)
        copies = server.handler.copies()
        port = settings.port
    with factory() as session:
        rows = {
            address_of[d.subscriber_id]: (d.status, d.last_reply or "")
            for d in session.scalars(select(Delivery))
        }
        status_of = {address_of[s.id]: s.status for s in session.scalars(select(Subscriber))}
    engine.dispose()

    got = {address: (rows[address][0], copies[sendable_address(address)]) for address in ORDER}
    assert got == expected(fault)
    assert sum(copies.values()) == sum(n for _, n in expected(fault).values())
    if fault.fatal is None:
        assert report.fatal is None
    else:
        assert report.fatal is not None
        assert report.fatal.startswith(fault.fatal.format(port=port)), report.fatal
    assert sorted(a for a, status in status_of.items() if status == "bounced") == sorted(
        fault.bounced
    )
    assert sorted(report.bounced) == sorted(fault.bounced)
    for address, reply in fault.replies.items():
        assert reply in rows[address][1], rows[address][1]
    statuses = [status for status, _ in expected(fault).values()]
    assert (report.sent, report.failed, report.deferred, report.unknown, report.queued) == (
        statuses.count("sent"),
        statuses.count("failed"),
        statuses.count("deferred"),
        statuses.count("unknown"),
        statuses.count("queued"),
    )


def test_the_internationalized_addresses_arrive_as_they_should(
    template: str, tmp_path, databases
) -> None:
    """With SMTPUTF8 the UTF-8 address goes as is; the IDN domain always as punycode."""
    url = databases.clone(template, tmp_path / "data")
    engine = db.open_database(url)
    factory = db.session_factory(engine)
    with SmtpServer(smtputf8=True) as server:
        report = send_all(factory, SmtpTransport(smtp_settings(server)))
        stored = {tuple(rcpts): raw for rcpts, raw in server.handler.messages}
    engine.dispose()
    assert report.sent == 40
    assert b"To: jos\xc3\xa9@ex\xc3\xa4mple.org\r\n" in stored[(UTF8,)]
    assert b"To: bob@xn--exmple-cua.org\r\n" in stored[("bob@xn--exmple-cua.org",)]
    assert stored[("bob@xn--exmple-cua.org",)].isascii()
