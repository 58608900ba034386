"""What a subscriber may ask for: addresses, topics, timezone, hour, frequency, name.

Every front that takes a subscriber's choices validates them here, in the same
words: the CLI (`digest subscribe`), the CSV import and the web forms.
Addresses are validated and normalized with email-validator (syntax only, no
DNS); timezones must be IANA names; topics are parsed with `digest.query` and
kept in canonical form (`TopicSpec`), so equivalent spellings are one topic
evaluated once per run. The `check_*` functions taking `FieldErrors` note every
bad field (the web forms show them all); `parse_preferences` and
`check_papers_exist` raise the first `SubscriberError`, the one line of the CLI
and of an import row. The result is `Preferences`, which `digest.subscribers`
applies to a stored subscriber.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from sqlalchemy.orm import Session

from digest import db
from digest.config_values import iana_timezones
from digest.errors import SubscriberError, shown
from digest.models import WEEKDAYS
from digest.query import QueryError, parse_query
from digest.sources.records import CONTROL_CHARS, one_line

MAX_TOPICS = 20
MAX_LABEL = 100
MAX_NAME = 100

T = TypeVar("T")


class FieldErrors(dict[str, str]):
    """Each bad field's message, in the order checked, as shown by the field: without the
    value the field holds (`SubscriberError.reason`: "Topic 2: query only excludes
    words", not "Topic 2: topic '-survey': query only excludes words").

    The web forms show them all at once, each by its field; the CLI and the CSV
    import raise the first (`first`) as their one line, which names the value.
    Both apply the same rules in the same words.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, str] = {}  # a field's message naming its value, when it has one

    def check(self, field: str, validate: Callable[[], T]) -> T | None:
        """`validate()`, or None with its SubscriberError as `field`'s message (the first kept)."""
        try:
            return validate()
        except SubscriberError as exc:
            if field not in self:
                self[field] = exc.reason
                self.lines[field] = str(exc)
            return None

    def first(self) -> SubscriberError:
        """The first message, naming its value, as the one error of a front that stops there."""
        field = next(iter(self))
        return SubscriberError(self.lines.get(field, self[field]))


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
    raise SubscriberError("use daily or weekly DAY (mon..sun)", f"frequency {shown(text)}")


@functools.lru_cache(maxsize=4096)  # pure; a bulk import repeats the same few topics
def split_label(text: str) -> tuple[str | None, str]:
    """`LABEL=QUERY` as (label, query text); (None, text) when there is no label (an '='
    inside a phrase or after a field is part of the query)."""
    head, sep, tail = text.partition("=")
    if sep and '"' not in head and ":" not in head:
        return head.strip(), tail
    return None, text


def parse_topic(text: str) -> TopicSpec:
    """`QUERY` or `LABEL=QUERY`; SubscriberError if the query is empty or matches nothing."""
    label, query_text = split_label(text)
    if label == "":
        raise SubscriberError("the label before '=' is empty", f"topic {shown(text)}")
    if label is not None and (len(label) > MAX_LABEL or not is_plain(label)):
        raise SubscriberError(
            f"a label of at most {MAX_LABEL} characters, "
            "without control or bidirectional-override characters",
            f"topic label {shown(label)}",
        )
    try:
        query = parse_query(query_text)
    except QueryError as exc:
        raise SubscriberError(str(exc), f"topic {shown(text)}") from None
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
                f"like:{reference}: no such paper {hint}",
                f"topic {shown(spec.label or spec.query)}",
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
            "one line of text, without control or direction characters", f"name {shown(name)}"
        )
    if len(text) > MAX_NAME:
        raise SubscriberError(f"at most {MAX_NAME} characters, got {len(text)}", "name")
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
