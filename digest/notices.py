"""The web front's one-off emails (notices): what they say, and their sending.

`digest.web` answers a subscribe form by posting a notice to the `Outbox`
(`Outbox.post(subscriber_id, kind, now, request_id)`): a confirmation link for
a subscription request (`CONFIRM`), or, for an address that already receives
digests, a link to manage it (`ALREADY`). One background thread sends them in
order, so the request answers at once and in the same time whether or not an
email is due; `drain` waits for the queue (tests, shutdown). `frequency` and
`topics_text` word a subscription for these emails and for the web pages alike.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, object_session

from digest import db, links
from digest.app import App
from digest.models import Subscriber, SubscriptionRequest
from digest.render import Notice
from digest.subscribers import CONFIRM, request_claim, request_sent, requested
from digest.views import topic_titles

log = logging.getLogger("digest.web")  # the web front's lines: it is the only sender

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass
class Outbox:
    """Sends one-off emails (confirmations) from one background thread, in order.

    The request that asks for one answers at once, and in the same time whether
    or not an email is due. A send that fails is logged and clears the
    address's resend mark, so asking again works.
    """

    wiring: App
    _queue: queue.Queue[tuple[int, str, datetime, int | None]] = field(default_factory=queue.Queue)
    _worker: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def post(
        self, subscriber_id: int, kind: str, now: datetime, request_id: int | None = None
    ) -> None:
        """Send the `kind` email to a subscriber (about subscription request `request_id`)."""
        self._queue.put((subscriber_id, kind, now, request_id))
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="digest-outbox", daemon=True
                )
                self._worker.start()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every posted email was handed to the transport (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _work(self) -> None:
        while True:
            subscriber_id, kind, now, request_id = self._queue.get()
            try:
                self._deliver(subscriber_id, kind, now, request_id)
            finally:
                self._queue.task_done()

    def _deliver(
        self, subscriber_id: int, kind: str, now: datetime, request_id: int | None
    ) -> None:
        try:
            with self.wiring.sessions()() as session:
                subscriber = session.get(Subscriber, subscriber_id)
                request = session.get(SubscriptionRequest, request_id) if request_id else None
                if subscriber is None or (request_id and request is None):
                    return  # forgotten since (purged, or confirmed by an earlier email)
                mailer = self.wiring.mailer()
                notice = self.notice(subscriber, kind, now, request)
                message = mailer.notice_message(subscriber, notice, now)
            transport = self.wiring.transport()
            try:
                transport.send(message)
            finally:
                transport.close()
        except Exception:
            log.exception("could not send the %s email to subscriber %s", kind, subscriber_id)
            self._forget(subscriber_id, request_id, now)
            return
        if request_id:
            try:
                with db.transaction(self.wiring.sessions()) as session:
                    request_sent(session, request_id, now)
            except Exception:  # the email went: its link works, the older ones too
                log.exception("could not mark the request of subscriber %s", subscriber_id)

    def _forget(self, subscriber_id: int, request_id: int | None, now: datetime) -> None:
        """Clear the resend mark, and drop the request whose email did not go out (sent
        at `now`); an email never sent begins no run of unanswered ones either."""
        try:
            with db.transaction(self.wiring.sessions()) as session:
                subscriber = session.get(Subscriber, subscriber_id)
                if subscriber is not None:
                    subscriber.confirm_sent_at = None
                    if subscriber.unanswered_since == now:
                        subscriber.unanswered_since = None
                request = session.get(SubscriptionRequest, request_id) if request_id else None
                if request is not None and request.sent_at is None:
                    session.delete(request)
        except Exception:
            log.exception("could not clear the resend mark of subscriber %s", subscriber_id)

    def notice(
        self,
        subscriber: Subscriber,
        kind: str,
        now: datetime,
        request: SubscriptionRequest | None = None,
    ) -> Notice:
        """The `kind` email; a confirmation describes, and its link confirms, `request`."""
        config = self.wiring.config
        key = self.wiring.secret_key()
        base = config.site.base_url
        site = config.site.name
        if kind == CONFIRM:
            if request is None:
                raise ValueError("a confirmation email confirms a subscription request")
            claim = request_claim(request)
            session = object_session(subscriber)
            subscriber = requested(subscriber, request)
            topics = topics_text(subscriber, session)
            token = links.confirm_token(key, subscriber.secret, subscriber.id, now, claim)
            hours = f"{config.web.confirm_hours:g}"
            return Notice(
                subject=f"Confirm your subscription to {site}",
                heading="Confirm your subscription",
                paragraphs=(
                    f"Someone, hopefully you, asked {site} to send a {frequency(subscriber)} "
                    f"digest to this address, on: {topics}.",
                    "Nothing will be sent until you confirm.",
                ),
                action_label="Confirm subscription",
                action_url=f"{base}/confirm/{token}",
                footnote=f"The link works for {hours} hours. Didn't ask for this? "
                "Ignore this email and the request is forgotten.",
            )
        topics = topics_text(subscriber)
        manage = links.subscriber_links(base, key, subscriber.id, subscriber.secret).manage
        return Notice(
            subject=f"You already receive {site}",
            heading="You're already subscribed",
            paragraphs=(
                f"Someone, hopefully you, asked to subscribe this address to {site}. "
                f"It already receives the {frequency(subscriber)} digest, on: {topics}.",
                "Nothing was changed. To change your topics or schedule, or to unsubscribe, "
                "use the link below.",
            ),
            action_label="Manage your subscription",
            action_url=manage,
        )


def topics_text(subscriber: Subscriber, session: Session | None = None) -> str:
    return "; ".join(topic_titles(subscriber, session=session))


def frequency(subscriber: Subscriber) -> str:
    return (
        "daily" if subscriber.weekday is None else f"weekly ({WEEKDAY_NAMES[subscriber.weekday]})"
    )
