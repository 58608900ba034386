"""Subscribers and their topics: validation, subscribe, unsubscribe.

Used by the CLI now and by the web front later. Addresses are validated and
normalized with email-validator (syntax only, no DNS); timezones must be IANA
names; topics are parsed with `digest.query` and stored in canonical form, so
equivalent spellings are one topic evaluated once per run.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from sqlalchemy.orm import Session

from digest import db
from digest.config import iana_timezones
from digest.errors import DigestError
from digest.models import WEEKDAYS, Subscriber, Topic
from digest.query import QueryError, parse_query
from digest.sources.records import CONTROL_CHARS

MAX_TOPICS = 20
MAX_LABEL = 100


class SubscriberError(DigestError, ValueError):
    """Invalid subscriber input: address, timezone, hour, weekday or topic."""


@dataclass(frozen=True)
class TopicSpec:
    query: str
    label: str | None


def _validated(address: str) -> ValidatedEmail:
    if CONTROL_CHARS.search(address):
        raise SubscriberError(f"invalid email address {address!r}: control characters")
    try:
        return validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"invalid email address {address!r}: {exc}") from None


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
        raise SubscriberError(f"unknown timezone {name!r}: use an IANA name such as Europe/Paris")
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


def parse_weekday(name: str) -> int:
    key = name.strip().casefold()[:3]
    if key not in WEEKDAYS or not name.strip().casefold().startswith(key):
        raise SubscriberError(f"unknown weekday {name!r}: use mon, tue, wed, thu, fri, sat or sun")
    return WEEKDAYS.index(key)


def parse_topic(text: str) -> TopicSpec:
    """`QUERY` or `LABEL=QUERY`; SubscriberError if the query is empty or matches nothing."""
    label: str | None = None
    query_text = text
    head, sep, tail = text.partition("=")
    if sep and head.strip() and '"' not in head and ":" not in head:
        label, query_text = head.strip(), tail
    if label is not None and (len(label) > MAX_LABEL or CONTROL_CHARS.search(label)):
        raise SubscriberError(
            f"topic label {label[:40]!r}: at most {MAX_LABEL} characters, "
            "without control or bidirectional-override characters"
        )
    try:
        query = parse_query(query_text)
    except QueryError as exc:
        raise SubscriberError(f"topic {text!r}: {exc}") from None
    return TopicSpec(query=query.canonical(), label=label)


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
    default_timezone: str = "UTC",
    default_hour: int = 7,
) -> tuple[Subscriber, bool]:
    """Add an active subscriber, or update an existing one; return it and whether it is new.

    Topics replace the old ones; options not given keep their values.
    """
    email, key = normalize_email(address)
    if not topics:
        raise SubscriberError("give at least one --topic")
    if len(topics) > MAX_TOPICS:
        raise SubscriberError(f"at most {MAX_TOPICS} topics per subscriber")
    specs = list({spec.query: spec for spec in map(parse_topic, topics)}.values())
    if timezone is not None:
        check_timezone(timezone)
    if hour is not None:
        check_hour(hour)
    subscriber = db.find_subscriber(session, key)
    created = subscriber is None
    if subscriber is None:
        subscriber = Subscriber(
            email=email,
            email_key=key,
            timezone=timezone or default_timezone,
            send_hour=default_hour if hour is None else hour,
            weekday=weekday,
            secret=new_secret(),
            created_at=now,
            topics=[],
        )
        session.add(subscriber)
    else:
        subscriber.email = email
        subscriber.timezone = timezone or subscriber.timezone
        subscriber.send_hour = subscriber.send_hour if hour is None else hour
        subscriber.weekday = None if daily else (subscriber.weekday if weekday is None else weekday)
    subscriber.status = "active"
    subscriber.confirmed_at = subscriber.confirmed_at or now
    subscriber.updated_at = now
    subscriber.topics.clear()
    session.flush()
    subscriber.topics.extend(
        Topic(position=position, query=spec.query, label=spec.label)
        for position, spec in enumerate(specs)
    )
    session.flush()
    return subscriber, created


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
        topics=[
            Topic(position=i, query=spec.query, label=spec.label) for i, spec in enumerate(specs)
        ],
    )


def existing_subscriber(session: Session, address: str) -> Subscriber:
    """The subscriber with this address (any case); SubscriberError if there is none."""
    _, key = normalize_email(address)
    subscriber = db.find_subscriber(session, key)
    if subscriber is None:
        raise SubscriberError(f"no subscriber {address!r}")
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
