"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, with faults to order.

`SmtpServer` records every message it stores and can be told, per recipient:

* `rcpt_replies[address]`: answer RCPT with this reply (4xx, 5xx, 5.7.1, 421...);
* `data_replies[address]`: answer the end of DATA with this reply, storing nothing;
* `drop_at_rcpt[address]`: close the connection at RCPT this many times (before DATA:
  nothing stored);
* `drop_before_store`: close the connection once the body is in, storing nothing;
* `drop_after_store`: store the message, then close without answering;
* `stall_rcpt[address]`: wait this many seconds before answering RCPT;
* `hold[address]`: store the message, then wait this many seconds before answering;
* `drop_before_mail`: close the connection at the Nth MAIL FROM of the server's life;
* `mail_reply`: answer every MAIL FROM with this reply (a blocked sender).

`SmtpServer(smtputf8=True)` offers SMTPUTF8 (aiosmtpd does not by default);
`credentials=` requires AUTH (and STARTTLS when `tls_context` is given), and
`logins_allowed=N` makes every login after the Nth fail.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts: a 127.0.0.1 certificate from a CA the client trusts."""
    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Handler:
    messages: list[tuple[list[str], bytes]] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)
    drop_at_rcpt: Counter[str] = field(default_factory=Counter)
    drop_before_store: set[str] = field(default_factory=set)
    drop_after_store: set[str] = field(default_factory=set)
    stall_rcpt: dict[str, float] = field(default_factory=dict)
    hold: dict[str, float] = field(default_factory=dict)
    mail_reply: str | None = None
    drop_before_mail: set[int] = field(default_factory=set)
    delay: float = 0.0
    sessions: int = 0  # EHLOs: one per connection
    mails: int = 0
    rcpts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _drop(server) -> str:
        # Closed before the reply is written: the client reads end-of-file, no reply.
        server.transport.close()
        return "421 4.4.2 closing"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mails += 1
        if self.mails in self.drop_before_mail:
            return self._drop(server)
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpts += 1
        if address in self.stall_rcpt:
            await asyncio.sleep(self.stall_rcpt[address])
        if self.drop_at_rcpt[address] > 0:
            self.drop_at_rcpt[address] -= 1
            return self._drop(server)
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        rcpts = list(envelope.rcpt_tos)
        if any(rcpt in self.drop_before_store for rcpt in rcpts):
            return self._drop(server)
        for rcpt in rcpts:
            if rcpt in self.data_replies:
                return self.data_replies[rcpt]
        with self.lock:
            self.messages.append((rcpts, envelope.original_content))
        if any(rcpt in self.drop_after_store for rcpt in rcpts):
            return self._drop(server)
        for rcpt in rcpts:
            if rcpt in self.hold:
                await asyncio.sleep(self.hold[rcpt])
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 accepted"

    def parsed(self) -> list[EmailMessage]:
        return [message_from_bytes(raw, policy=policy.default) for _, raw in self.messages]

    def recipients(self) -> list[str]:
        return [rcpt for rcpts, _ in self.messages for rcpt in rcpts]

    def copies(self) -> Counter[str]:
        """How many stored copies each recipient got."""
        return Counter(self.recipients())


class SmtpServer:
    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        logins_allowed: int | None = None,
        smtputf8: bool = False,
    ) -> None:
        self.handler = Handler()
        self.port = free_port()
        self.logins = 0
        options: dict[str, object] = {"enable_SMTPUTF8": smtputf8}
        if tls_context is not None:
            options.update(tls_context=tls_context, require_starttls=True)
        if credentials is not None:

            def authenticate(server, session, envelope, mechanism, auth_data):
                ok = (
                    isinstance(auth_data, LoginPassword)
                    and (auth_data.login.decode(), auth_data.password.decode()) == credentials
                    and (logins_allowed is None or self.logins < logins_allowed)
                )
                self.logins += ok
                return AuthResult(success=ok, handled=False)

            # Without TLS, AUTH is offered but not required (aiosmtpd warns otherwise);
            # the client logs in whenever it has a username.
            options.update(
                authenticator=authenticate,
                auth_required=tls_context is not None,
                auth_require_tls=tls_context is not None,
            )
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10, **options
        )

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
