"""Subscribers and their topics: validation, subscribe, unsubscribe.

Used by the CLI, the CSV import and the web front. Addresses are validated and
normalized with email-validator (syntax only, no DNS); timezones must be IANA
names; topics are parsed with `digest.query` and stored in canonical form, so
equivalent spellings are one topic evaluated once per run. The `check_*`
functions taking `FieldErrors` note every bad field (the web forms show them
all); `parse_preferences` and `check_papers_exist` raise the first, the one
line of the CLI and of an import row.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from sqlalchemy.orm import Session

from digest import db
from digest.config_values import iana_timezones
from digest.errors import DigestError, shown
from digest.models import WEEKDAYS, Subscriber, SubscriptionRequest, Topic
from digest.query import QueryError, parse_query
from digest.sources.records import CONTROL_CHARS, one_line

MAX_TOPICS = 20
MAX_LABEL = 100
MAX_NAME = 100

T = TypeVar("T")


class SubscriberError(DigestError, ValueError):
    """Invalid subscriber input: address, timezone, hour, weekday or topic."""


class FieldErrors(dict[str, str]):
    """Each bad field's message, in the order checked.

    The web forms show them all at once, each by its field; the CLI and the CSV
    import raise the first (`first`) as their one line. Both apply the same rules
    in the same words.
    """

    def check(self, field: str, validate: Callable[[], T]) -> T | None:
        """`validate()`, or None with its SubscriberError as `field`'s message (the first kept)."""
        try:
            return validate()
        except SubscriberError as exc:
            self.setdefault(field, str(exc))
            return None

    def first(self) -> SubscriberError:
        """The first message, as the one error of a front that stops there."""
        return SubscriberError(next(iter(self.values())))


@dataclass(frozen=True)
class TopicSpec:
    query: str
    label: str | None


def _validated(address: str) -> ValidatedEmail:
    if CONTROL_CHARS.search(address):
        raise SubscriberError(f"invalid email address {shown(address)}: control characters")
    try:
        return validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"invalid email address {shown(address)}: {exc}") from None


def normalize_email(address: str) -> tuple[str, str]:
    """(normalized address, lookup key); SubscriberError if the syntax is invalid.

    Internationalized addresses are accepted: the domain is kept in Unicode here
    and sent in punycode; a non-ASCII local part is sent with SMTPUTF8.
    """
    result = _validated(address)
    return result.normalized, result.normalized.casefold()


def sendable_address(address: str) -> str:
    """`address` as it goes on the wire: the domain in ASCII (punycode, RFC 5891).

    An ASCII local part then makes an all-ASCII address that any server takes;
    a non-ASCII local part stays as it is and needs a server offering SMTPUTF8.
    SubscriberError if the address is not valid.
    """
    result = _validated(address)
    return result.ascii_email or result.normalized


def check_timezone(name: str) -> str:
    if name not in iana_timezones():
        raise SubscriberError(
            f"unknown timezone {shown(name)}: use an IANA name such as Europe/Paris"
        )
    return name


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


def check_hour(hour: int) -> int:
    if not 0 <= hour <= 23:
        raise SubscriberError(f"hour must be between 0 and 23, got {hour}")
    return hour


def parse_hour(text: str) -> int:
    """An hour typed as text (a CSV cell, a form field): one or two ASCII digits, 0-23.

    `str.isdigit` alone would let "²" or a 5,000-digit number through to `int()`.
    """
    value = text.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 2):
        raise SubscriberError(f"hour must be between 0 and 23, got {shown(value)}")
    return check_hour(int(value))


def parse_weekday(name: str) -> int:
    key = name.strip().casefold()[:3]
    if key not in WEEKDAYS or not name.strip().casefold().startswith(key):
        raise SubscriberError(
            f"unknown weekday {shown(name)}: use mon, tue, wed, thu, fri, sat or sun"
        )
    return WEEKDAYS.index(key)


def parse_frequency(text: str) -> int | None:
    """`daily` (None) or `weekly DAY`, also written `weekly (DAY)`: the weekday number."""
    words = text.replace("(", " ").replace(")", " ").split()
    if [word.casefold() for word in words] == ["daily"]:
        return None
    if len(words) == 2 and words[0].casefold() == "weekly":
        return parse_weekday(words[1])
    raise SubscriberError(f"frequency {shown(text)}: use daily or weekly DAY (mon..sun)")


@functools.lru_cache(maxsize=4096)  # pure; a bulk import repeats the same few topics
def parse_topic(text: str) -> TopicSpec:
    """`QUERY` or `LABEL=QUERY`; SubscriberError if the query is empty or matches nothing."""
    label: str | None = None
    query_text = text
    head, sep, tail = text.partition("=")
    if sep and not head.strip():
        raise SubscriberError(f"topic {shown(text)}: the label before '=' is empty")
    if sep and '"' not in head and ":" not in head:
        label, query_text = head.strip(), tail
    if label is not None and (len(label) > MAX_LABEL or not is_plain(label)):
        raise SubscriberError(
            f"topic label {shown(label)}: at most {MAX_LABEL} characters, "
            "without control or bidirectional-override characters"
        )
    try:
        query = parse_query(query_text)
    except QueryError as exc:
        raise SubscriberError(f"topic {shown(text)}: {exc}") from None
    canonical = query.canonical()
    typed = one_line(query_text)
    if label is None and typed != canonical and len(typed) <= MAX_LABEL and is_plain(typed):
        label = typed  # shown as the subscriber typed it: "3D", not "3d"
    return TopicSpec(query=canonical, label=label)


def topic_field(position: int) -> str:
    """The field name of the topic at `position` (from 1) in `FieldErrors`: "topic-2"."""
    return f"topic-{position}"


def check_topics(topics: list[str], errors: FieldErrors) -> tuple[TopicSpec, ...]:
    """Parse topics, refusing two that are the same query (one would silently go).

    A bad topic's message goes to its own field (`topic_field`), one about the
    list as a whole to "topics"; the topics that parse are returned.
    """
    if not topics:
        errors["topics"] = "give at least one topic"
    elif len(topics) > MAX_TOPICS:
        errors["topics"] = f"at most {MAX_TOPICS} topics per subscriber"
    typed: dict[str, str] = {}
    specs: list[TopicSpec] = []
    for position, text in enumerate(topics, 1):
        spec = errors.check(topic_field(position), functools.partial(parse_topic, text))
        if spec is None:
            continue
        if spec.query in typed:
            errors[topic_field(position)] = (
                f"topics {shown(typed[spec.query])} and {shown(text)} are the same query "
                f"{shown(spec.query)}: give it once"
            )
            continue
        typed[spec.query] = text
        specs.append(spec)
    return tuple(specs)


CLI_PAPER_HINT = "(see `digest papers`)"


def check_paper_exists(session: Session, spec: TopicSpec, hint: str = CLI_PAPER_HINT) -> None:
    """Refuse a like:ID topic naming a paper that is not in the database (`hint`: where to
    find one)."""
    if "like:" not in spec.query.casefold():
        return  # most topics: no second parse
    for reference in parse_query(spec.query).likes:
        if db.find_paper_by_reference(session, reference) is None:
            raise SubscriberError(
                f"topic {shown(spec.label or spec.query)}: like:{reference}: no such paper {hint}"
            )


def check_papers_exist(session: Session, preferences: Preferences) -> None:
    """Refuse a like:ID topic naming a paper that is not in the database (the first such)."""
    for spec in preferences.topics:
        check_paper_exists(session, spec)


def check_topic_papers(
    session: Session, topics: list[str], errors: FieldErrors, hint: str = CLI_PAPER_HINT
) -> None:
    """`check_paper_exists` on each topic that parsed, into that topic's field of `errors`."""
    for position, text in enumerate(topics, 1):
        if topic_field(position) not in errors:
            errors.check(
                topic_field(position),
                functools.partial(check_paper_exists, session, parse_topic(text), hint),
            )


def is_plain(text: str) -> bool:
    """No control, line-breaking or bidirectional characters: safe to show anywhere."""
    return not CONTROL_CHARS.search(text)


def check_name(name: str) -> str | None:
    """A display name for the greeting, trimmed; None when empty. SubscriberError if unfit."""
    text = name.strip()
    if not is_plain(text):
        raise SubscriberError(
            f"name {shown(name)}: one line of text, without control or direction characters"
        )
    if len(text) > MAX_NAME:
        raise SubscriberError(f"name: at most {MAX_NAME} characters, got {len(text)}")
    return text or None


@dataclass(frozen=True)
class Preferences:
    """Validated subscription settings; None (and `daily=False`) keeps the current value."""

    topics: tuple[TopicSpec, ...]
    timezone: str | None = None
    hour: int | None = None
    weekday: int | None = None
    daily: bool = False
    name: str | None = None  # None keeps the current name, "" removes it


def check_preferences(
    topics: list[str],
    errors: FieldErrors,
    *,
    timezone: str | None = None,
    hour: int | None = None,
    weekday: int | None = None,
    daily: bool = False,
    name: str | None = None,
) -> Preferences | None:
    """Validate everything a subscriber chooses, every field: None if `errors` has any."""
    specs = check_topics(topics, errors)
    checked = Preferences(
        topics=specs,
        timezone=None
        if timezone is None
        else errors.check("timezone", lambda: check_timezone(timezone)),
        hour=None if hour is None else errors.check("hour", lambda: check_hour(hour)),
        weekday=weekday,
        daily=daily,
        name=None if name is None else errors.check("name", lambda: check_name(name) or ""),
    )
    return None if errors else checked


def parse_preferences(
    topics: list[str],
    *,
    timezone: str | None = None,
    hour: int | None = None,
    weekday: int | None = None,
    daily: bool = False,
    name: str | None = None,
) -> Preferences:
    """Validate everything a subscriber chooses; SubscriberError names the first bad field."""
    errors = FieldErrors()
    preferences = check_preferences(
        topics, errors, timezone=timezone, hour=hour, weekday=weekday, daily=daily, name=name
    )
    if preferences is None:
        raise errors.first()
    return preferences


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
    it is about; (subscriber, None, None), with nothing stored, when an email went to
    this address less than `resend_after` ago: the form cannot flood an inbox.
    """
    check_papers_exist(session, preferences)
    subscriber, created = find_or_create(session, address, now, default_timezone, default_hour)
    if created:
        apply_preferences(session, subscriber, preferences, now)
    last = subscriber.confirm_sent_at
    if last is not None and now - last < resend_after:
        return subscriber, None, None
    subscriber.confirm_sent_at = now
    if subscriber.status == "active":
        session.flush()
        return subscriber, ALREADY, None
    request = SubscriptionRequest(preferences=preferences_json(preferences), created_at=now)
    subscriber.requests.append(request)
    session.flush()
    return subscriber, CONFIRM, request


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
    never confirmed is deleted; one that had been a subscriber before (it has a sent
    history to keep) goes back to `unsubscribed`.
    """
    cutoff = now - older_than
    db.delete_stale_requests(session, cutoff)
    purged = 0
    for subscriber in db.stale_pending_subscribers(session, cutoff):
        if subscriber.confirmed_at is None:
            session.delete(subscriber)
        else:
            subscriber.status = "unsubscribed"
            subscriber.updated_at = now
        purged += 1
    session.flush()
    return purged


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
