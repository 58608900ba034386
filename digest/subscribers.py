"""Subscribers and their topics: validation, subscribe, unsubscribe.

Used by the CLI now and by the web front later. Addresses are validated and
normalized with email-validator (syntax only, no DNS); timezones must be IANA
names; topics are parsed with `digest.query` and stored in canonical form, so
equivalent spellings are one topic evaluated once per run.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.orm import Session

from digest import db
from digest.config import iana_timezones
from digest.errors import DigestError
from digest.models import WEEKDAYS, Subscriber, Topic
from digest.query import QueryError, parse_query
from digest.sources.records import CONTROL_CHARS

MAX_TOPICS = 20
MAX_LABEL = 100
MAX_NAME = 100
# A cell starting with one of these runs as a formula when an exported CSV is opened
# in a spreadsheet, so free-text names and labels may not.
FORMULA_START = ("=", "+", "-", "@")


class SubscriberError(DigestError, ValueError):
    """Invalid subscriber input: address, timezone, hour, weekday or topic."""


@dataclass(frozen=True)
class TopicSpec:
    query: str
    label: str | None


def normalize_email(address: str) -> tuple[str, str]:
    """(normalized address, lookup key); SubscriberError if the syntax is invalid."""
    if CONTROL_CHARS.search(address):
        raise SubscriberError(f"invalid email address {address!r}: control characters")
    try:
        result = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"invalid email address {address!r}: {exc}") from None
    return result.normalized, result.normalized.casefold()


def check_timezone(name: str) -> str:
    if name not in iana_timezones():
        raise SubscriberError(f"unknown timezone {name!r}: use an IANA name such as Europe/Paris")
    return name


def check_hour(hour: int) -> int:
    if not 0 <= hour <= 23:
        raise SubscriberError(f"hour must be between 0 and 23, got {hour}")
    return hour


def parse_weekday(name: str) -> int:
    key = name.strip().casefold()[:3]
    if key not in WEEKDAYS or not name.strip().casefold().startswith(key):
        raise SubscriberError(f"unknown weekday {name!r}: use mon, tue, wed, thu, fri, sat or sun")
    return WEEKDAYS.index(key)


def parse_frequency(text: str) -> int | None:
    """`daily` (None) or `weekly DAY`, also written `weekly (DAY)`: the weekday number."""
    words = text.replace("(", " ").replace(")", " ").replace(":", " ").split()
    if [word.casefold() for word in words] == ["daily"]:
        return None
    if len(words) == 2 and words[0].casefold() == "weekly":
        return parse_weekday(words[1])
    raise SubscriberError(f"frequency {text!r}: use daily or weekly DAY (mon..sun)")


def check_name(name: str) -> str | None:
    """A display name (None if blank); SubscriberError if it is not short plain text."""
    name = name.strip()
    if len(name) > MAX_NAME or CONTROL_CHARS.search(name) or name.startswith(FORMULA_START):
        raise SubscriberError(
            f"name {name[:40]!r}: at most {MAX_NAME} plain characters, not starting with "
            + " ".join(FORMULA_START)
        )
    return name or None


@functools.lru_cache(maxsize=4096)  # a bulk import repeats the same few topics
def parse_topic(text: str) -> TopicSpec:
    """`QUERY` or `LABEL=QUERY`; SubscriberError if the query is empty or matches nothing."""
    label: str | None = None
    query_text = text
    head, sep, tail = text.partition("=")
    if sep and head.strip() and '"' not in head and ":" not in head:
        label, query_text = head.strip(), tail
    if label is not None and (
        len(label) > MAX_LABEL
        or CONTROL_CHARS.search(label)
        or ";" in label
        or label.startswith(FORMULA_START)
    ):
        raise SubscriberError(
            f"topic label {label[:40]!r}: at most {MAX_LABEL} plain characters, "
            "no ';', not starting with " + " ".join(FORMULA_START)
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
    specs = topic_specs(topics, "give at least one --topic")
    if timezone is not None:
        check_timezone(timezone)
    if hour is not None:
        check_hour(hour)
    subscriber = db.find_subscriber(session, key)
    created = subscriber is None
    if subscriber is None:
        values = new_subscriber_values(
            email,
            key,
            now=now,
            timezone=timezone or default_timezone,
            hour=default_hour if hour is None else hour,
            weekday=weekday,
        )
        subscriber = Subscriber(**values, topics=[])
        session.add(subscriber)
    else:
        subscriber.email = email
        change_schedule(subscriber, timezone=timezone, hour=hour, weekday=weekday, daily=daily)
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


def topic_specs(topics: Sequence[str], none_given: str) -> list[TopicSpec]:
    """Parsed topics without repeats; SubscriberError (`none_given`) if there are none."""
    if not topics:
        raise SubscriberError(none_given)
    if len(topics) > MAX_TOPICS:
        raise SubscriberError(f"at most {MAX_TOPICS} topics per subscriber")
    return list({spec.query: spec for spec in map(parse_topic, topics)}.values())


def new_subscriber_values(
    email: str,
    key: str,
    *,
    now: datetime,
    timezone: str,
    hour: int,
    weekday: int | None,
    name: str | None = None,
    status: str = "active",
) -> dict[str, Any]:
    """The column values of a new subscriber, with a fresh secret for its signed links."""
    return {
        "email": email,
        "email_key": key,
        "name": name,
        "status": status,
        "timezone": timezone,
        "send_hour": hour,
        "weekday": weekday,
        "secret": secrets.token_urlsafe(32),
        "created_at": now,
        "confirmed_at": now if status == "active" else None,
        "updated_at": now,
    }


def change_schedule(
    subscriber: Subscriber,
    *,
    timezone: str | None,
    hour: int | None,
    weekday: int | None,
    daily: bool,
) -> None:
    """Apply the schedule options given (None: keep); `daily` drops a weekly day."""
    subscriber.timezone = timezone or subscriber.timezone
    subscriber.send_hour = subscriber.send_hour if hour is None else hour
    subscriber.weekday = None if daily else (subscriber.weekday if weekday is None else weekday)


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


def unsubscribe(session: Session, address: str, now: datetime) -> Subscriber:
    """Mark a subscriber unsubscribed (kept for the sent history); error if unknown."""
    _, key = normalize_email(address)
    subscriber = db.find_subscriber(session, key)
    if subscriber is None:
        raise SubscriberError(f"no subscriber {address!r}")
    subscriber.status = "unsubscribed"
    subscriber.updated_at = now
    return subscriber
