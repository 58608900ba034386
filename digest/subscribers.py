"""Subscribers' lifecycle: subscribe, request and confirm, unsubscribe, rotate a secret.

Used by the CLI, the CSV import, the scheduler and the web front. What a
subscriber asks for is validated first (`digest.preferences`, whose
`Preferences` these functions apply); here it becomes stored state: the
operator's `subscribe` (active at once), the web's double opt-in
(`request_subscription` stores a `SubscriptionRequest` that `confirm` applies),
`unsubscribe`, `rotate_secret`, and `purge_pending` forgetting what nobody
confirmed. `sendable` keeps the stored subscribers a digest can be sent to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from digest import db
from digest.errors import SubscriberError, shown
from digest.models import Subscriber, SubscriptionRequest, Topic
from digest.preferences import (
    Preferences,
    TopicSpec,
    check_hour,
    check_papers_exist,
    check_timezone,
    normalize_email,
    parse_preferences,
    parse_topic,
)


def sendable(
    subscribers: Iterable[Subscriber], warn: Callable[[str], None] = lambda _: None
) -> list[Subscriber]:
    """The subscribers whose stored timezone loads; `warn` hears about each other one.

    Subscribe validates timezones, but a row written by an older version, by hand
    or before a tzdata update must not stop everyone else's digest.
    """
    kept = []
    for subscriber in subscribers:
        try:
            ZoneInfo(subscriber.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            warn(
                f"{subscriber.email} left out: unknown timezone {subscriber.timezone!r} "
                f"(fix it with: digest subscribe {subscriber.email} --topic ... "
                "--timezone Europe/Paris)"
            )
            continue
        kept.append(subscriber)
    return kept


def apply_preferences(
    session: Session, subscriber: Subscriber, preferences: Preferences, now: datetime
) -> None:
    """Give `subscriber` these preferences; topics replace the old ones (a query they
    followed already keeps when it was added, `added_times`)."""
    apply_settings(subscriber, preferences)
    subscriber.updated_at = now
    added = added_times(preferences.topics, subscriber.topics, now)
    subscriber.topics.clear()
    session.flush()
    subscriber.topics.extend(topic_rows(preferences.topics, added))
    session.flush()


def added_times(specs: Sequence[TopicSpec], kept: Iterable[Topic], now: datetime) -> list[datetime]:
    """When each of these topics was added, given the ones followed so far (`kept`): a
    query among them keeps its time, whatever its label; any other query, a new topic or
    an edited one, is added `now` (its next digest looks back like a first digest)."""
    since = {topic.query: topic.added_at for topic in kept}
    return [since.get(spec.query, now) for spec in specs]


def topic_rows(specs: Sequence[TopicSpec], added: Sequence[datetime] | None = None) -> list[Topic]:
    """New `Topic` rows for these topics, in order, added at the times `added` gives
    (`added_times`); without them for a subscriber never stored (a preview, a request)."""
    rows = [
        Topic(position=position, query=spec.query, label=spec.label)
        for position, spec in enumerate(specs)
    ]
    if added is not None:
        for row, at in zip(rows, added, strict=True):
            row.added_at = at
    return rows


def apply_settings(subscriber: Subscriber, preferences: Preferences) -> None:
    """The preferences other than topics: schedule and name (None keeps a value)."""
    subscriber.timezone = preferences.timezone or subscriber.timezone
    if preferences.hour is not None:
        subscriber.send_hour = preferences.hour
    if preferences.daily:
        subscriber.weekday = None
    elif preferences.weekday is not None:
        subscriber.weekday = preferences.weekday
    if preferences.name is not None:
        subscriber.name = preferences.name or None


def find_or_create(
    session: Session,
    address: str,
    now: datetime,
    default_timezone: str,
    default_hour: int,
) -> tuple[Subscriber, bool]:
    """The subscriber with this address, or a new one (added to the session, no topics yet)."""
    email, key = normalize_email(address)
    subscriber = db.find_subscriber(session, key)
    if subscriber is not None:
        return subscriber, False
    subscriber = Subscriber(
        email=email,
        email_key=key,
        status="pending",
        timezone=default_timezone,
        send_hour=default_hour,
        weekday=None,
        secret=new_secret(),
        created_at=now,
        updated_at=now,
        topics=[],
    )
    session.add(subscriber)
    return subscriber, True


def subscribe(
    session: Session,
    address: str,
    topics: list[str],
    *,
    now: datetime,
    timezone: str | None = None,
    hour: int | None = None,
    weekday: int | None = None,
    daily: bool = False,
    name: str | None = None,
    default_timezone: str = "UTC",
    default_hour: int = 7,
) -> tuple[Subscriber, bool]:
    """Add an active subscriber, or update an existing one; return it and whether it is new.

    This is the operator's path (`digest subscribe`): no confirmation. Topics
    replace the old ones; options not given (None) keep their values. A `name`
    is used in the greeting; an empty one removes it.
    """
    email, _ = normalize_email(address)
    preferences = parse_preferences(
        topics, timezone=timezone, hour=hour, weekday=weekday, daily=daily, name=name
    )
    check_papers_exist(session, preferences)
    subscriber, created = find_or_create(session, address, now, default_timezone, default_hour)
    subscriber.email = email
    subscriber.status = "active"
    subscriber.confirmed_at = subscriber.confirmed_at or now
    apply_preferences(session, subscriber, preferences, now)
    return subscriber, created


# What the subscribe form sends to the address it was given.
CONFIRM = "confirm"  # a link that confirms this request (and activates the address)
ALREADY = "already"  # the address already receives digests: a link to manage them


def request_subscription(
    session: Session,
    address: str,
    preferences: Preferences,
    *,
    now: datetime,
    resend_after: timedelta,
    default_timezone: str = "UTC",
    default_hour: int = 7,
) -> tuple[Subscriber, str | None, SubscriptionRequest | None]:
    """The double opt-in path (the public web form): whoever typed the address may not own it.

    Nothing here changes what an existing address (pending, active, unsubscribed or
    bounced) receives or would receive: the preferences are stored as a
    `SubscriptionRequest`, applied only when the link in that request's own
    confirmation email is used (`confirm`). A new address is stored `pending` with
    them (nobody else's settings to protect). An active subscriber gets no request:
    the owner is sent a link to manage their settings instead.

    Returns the subscriber, which email to send (`CONFIRM`, `ALREADY`) and the request
    it is about; (subscriber, None, None), with nothing stored, when the last email went
    to this address too recently (`resend_wait`): the form cannot flood an inbox.
    """
    check_papers_exist(session, preferences)
    subscriber, created = find_or_create(session, address, now, default_timezone, default_hour)
    if created:
        apply_preferences(session, subscriber, preferences, now)
    last, since = subscriber.confirm_sent_at, subscriber.unanswered_since
    if since is not None and now - since >= UNANSWERED_RUN:
        since = None
    if last is not None and now - last < resend_wait(last, since, resend_after):
        return subscriber, None, None
    subscriber.confirm_sent_at = now
    subscriber.unanswered_since = since or now
    if subscriber.status == "active":
        session.flush()
        return subscriber, ALREADY, None
    request = SubscriptionRequest(preferences=preferences_json(preferences), created_at=now)
    subscriber.requests.append(request)
    session.flush()
    return subscriber, CONFIRM, request


# An address's unanswered notice emails count as one run for this long after the first.
UNANSWERED_RUN = timedelta(days=30)


def resend_wait(last: datetime, since: datetime | None, resend_after: timedelta) -> timedelta:
    """How long after the email sent at `last` the next may go, when the first email the
    address has left unanswered went at `since`: `resend_after`, and then at least as long
    as that run had lasted, so the wait doubles with each email (1 h, 2 h, 4 h, ...).

    Someone who asks every hour for an address they do not own gets its owner sent six
    emails the first day and ten in the first fortnight, not 24 a day.
    """
    return resend_after if since is None else max(resend_after, last - since)


def preferences_json(preferences: Preferences) -> str:
    """Preferences as the JSON a `SubscriptionRequest` stores (one spelling per request)."""
    return json.dumps(
        {
            "topics": [[spec.query, spec.label] for spec in preferences.topics],
            "timezone": preferences.timezone,
            "hour": preferences.hour,
            "weekday": preferences.weekday,
            "daily": preferences.daily,
            "name": preferences.name,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def request_preferences(request: SubscriptionRequest) -> Preferences:
    """The preferences a stored request asks for."""
    stored = json.loads(request.preferences)
    return Preferences(
        topics=tuple(TopicSpec(query=query, label=label) for query, label in stored["topics"]),
        timezone=stored["timezone"],
        hour=stored["hour"],
        weekday=stored["weekday"],
        daily=stored["daily"],
        name=stored["name"],
    )


def request_digest(request: SubscriptionRequest) -> str:
    """A short hash of what a request asks for: its confirmation token carries it, so the
    link confirms exactly what its email described."""
    return hashlib.sha256(request.preferences.encode()).hexdigest()[:16]


def request_claim(request: SubscriptionRequest) -> tuple[int, str]:
    """What a confirmation token names of its request: id and hash."""
    return request.id, request_digest(request)


def find_request(
    session: Session, subscriber: Subscriber, claim: tuple[int, str]
) -> SubscriptionRequest | None:
    """The request of `subscriber` a confirmation token names, if it is still open and asks
    for what it did when the token was made."""
    request_id, digest = claim
    request = session.get(SubscriptionRequest, request_id)
    if request is None or request.subscriber_id != subscriber.id:
        return None
    return request if hmac.compare_digest(request_digest(request), digest) else None


def requested(subscriber: Subscriber, request: SubscriptionRequest) -> Subscriber:
    """`subscriber` as `request` would make it, never stored: what its email and its
    confirmation page describe."""
    preferences = request_preferences(request)
    view = Subscriber(
        id=subscriber.id,
        email=subscriber.email,
        name=subscriber.name,
        secret=subscriber.secret,
        status=subscriber.status,
        timezone=subscriber.timezone,
        send_hour=subscriber.send_hour,
        weekday=subscriber.weekday,
        topics=topic_rows(preferences.topics),
    )
    apply_settings(view, preferences)
    return view


def request_sent(session: Session, request_id: int, now: datetime) -> None:
    """The confirmation email of a request went out: it supersedes the older requests of
    that address (their links stop working)."""
    request = session.get(SubscriptionRequest, request_id)
    if request is not None:
        request.sent_at = now
        db.delete_requests_before(session, request.subscriber_id, request.id)


def confirm(
    session: Session, subscriber: Subscriber, request: SubscriptionRequest | None, now: datetime
) -> bool:
    """Confirm a subscription request: the address becomes active with what `request` asks
    for; True if it is (now) active.

    An active subscriber is left as is (their settings change on their manage page
    only), so a second click, or another request's link, changes nothing; the
    requests stay until `purge_pending` forgets them. `request` None is a link sent
    before requests were kept apart: it activates a pending subscriber's stored
    settings, and nothing else.
    """
    subscriber.unanswered_since = None  # the address answered: a new run of emails
    if subscriber.status == "active":
        return True
    if request is not None:
        apply_preferences(session, subscriber, request_preferences(request), now)
    elif subscriber.status != "pending":
        return False
    subscriber.status = "active"
    subscriber.confirmed_at = now
    subscriber.updated_at = now
    session.flush()
    return True


def purge_pending(session: Session, now: datetime, older_than: timedelta) -> int:
    """Forget subscription requests nobody confirmed within `older_than`.

    Every `SubscriptionRequest` older than that goes. A pending address that was
    never confirmed is deleted, but one sent several unanswered emails only once their
    run is over (`UNANSWERED_RUN`): until then it holds the ever longer wait before the
    next (`resend_wait`), which its deletion would start over. One that had been a
    subscriber before (it has a sent history to keep) goes back to `unsubscribed`.
    """
    cutoff = now - older_than
    db.delete_stale_requests(session, cutoff)
    purged = 0
    for subscriber in db.stale_pending_subscribers(session, cutoff):
        if subscriber.confirmed_at is None:
            if _in_unanswered_run(subscriber, now):
                continue
            session.delete(subscriber)
        else:
            subscriber.status = "unsubscribed"
            subscriber.updated_at = now
        purged += 1
    session.flush()
    return purged


def _in_unanswered_run(subscriber: Subscriber, now: datetime) -> bool:
    """Whether the address was sent more than one email it left unanswered, the first
    less than `UNANSWERED_RUN` ago (after one, the next waits `resend_after` anyway)."""
    since, last = subscriber.unanswered_since, subscriber.confirm_sent_at
    return since is not None and last is not None and since < last and now - since < UNANSWERED_RUN


def transient_subscriber(topics: list[str], timezone: str, hour: int) -> Subscriber:
    """A subscriber to ad hoc topics, never stored: what `preview --topic` shows."""
    specs = [parse_topic(topic) for topic in topics]
    return Subscriber(
        id=0,
        email="preview@example.org",
        secret="preview",
        status="active",
        timezone=check_timezone(timezone),
        send_hour=check_hour(hour),
        weekday=None,
        topics=topic_rows(specs),
    )


def existing_subscriber(session: Session, address: str) -> Subscriber:
    """The subscriber with this address (any case); SubscriberError if there is none."""
    _, key = normalize_email(address)
    subscriber = db.find_subscriber(session, key)
    if subscriber is None:
        raise SubscriberError(f"no subscriber {shown(address)}")
    return subscriber


def unsubscribe(session: Session, address: str, now: datetime) -> Subscriber:
    """Mark a subscriber unsubscribed (kept for the sent history); error if unknown."""
    subscriber = existing_subscriber(session, address)
    subscriber.status = "unsubscribed"
    subscriber.updated_at = now
    return subscriber


def rotate_secret(session: Session, address: str, now: datetime) -> Subscriber:
    """Give a subscriber a new link secret: every link in the emails sent so far stops working."""
    subscriber = existing_subscriber(session, address)
    subscriber.secret = new_secret()
    subscriber.updated_at = now
    return subscriber


def new_secret() -> str:
    return secrets.token_urlsafe(32)
