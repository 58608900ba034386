"""The web's preferences forms: what they show, what they accept, and their errors.

The subscribe page (`/`) and the manage page (`/manage/<token>`) of `digest.web`
share one form. `form_from_request` reads a submitted form into `FormValues`
(cut to sane lengths, shown back as typed), `form_from_subscriber` fills it from
a stored subscriber, and `check_form` validates every field with the rules of
`digest.preferences`, giving the `Preferences` to store or every field's
message at once (`FieldErrors`), which `error_summary` orders as the page shows
them. `unknown_paper` is the web's wording of a like:ID that names no paper,
for the topic fields as they are typed (`/api/match`) and a topic's page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from digest import db
from digest.errors import SubscriberError
from digest.models import WEEKDAYS, Subscriber
from digest.preferences import (
    FieldErrors,
    Preferences,
    check_preferences,
    check_topic_papers,
    normalize_email,
    parse_hour,
    parse_weekday,
)
from digest.query import parse_query

TOPIC_FIELDS = 6  # topic inputs on a form (a subscriber may have more via the CLI)


@dataclass
class FormValues:
    """What a preferences form shows: the submitted values, or a subscriber's settings."""

    email: str = ""
    name: str = ""
    topics: list[str] = field(default_factory=list)
    timezone: str = "UTC"
    timezone_chosen: bool = False
    hour: str = "7"  # as submitted when it is not an hour, so the form shows it back
    frequency: str = "daily"
    weekday: str = "mon"

    def padded(self) -> FormValues:
        """The same values with empty topic fields up to TOPIC_FIELDS."""
        extra = max(TOPIC_FIELDS - len(self.topics), 1 if len(self.topics) >= TOPIC_FIELDS else 0)
        return FormValues(**{**self.__dict__, "topics": [*self.topics, *([""] * extra)]})


def form_from_request(form: MultiDict[str, str], default_timezone: str) -> FormValues:
    return FormValues(
        email=form.get("email", "").strip()[:320],
        name=form.get("name", "").strip()[:100],
        topics=[topic.strip() for topic in form.getlist("topic") if topic.strip()][:50],
        timezone=form.get("timezone", default_timezone)[:64],
        timezone_chosen=True,
        hour=_form_hour(form.get("hour", "")),
        frequency="weekly" if form.get("frequency") == "weekly" else "daily",
        weekday=form.get("weekday", "mon")[:3],
    )


def _form_hour(text: str) -> str:
    """The hour field as check_form reads it: "7" for "07"; what was sent if it is no hour.

    Cut after stripping: past two characters it is no hour, whole or cut.
    """
    try:
        return str(parse_hour(text))
    except SubscriberError:
        return text.strip()[:8]


def form_from_subscriber(subscriber: Subscriber) -> FormValues:
    return FormValues(
        email=subscriber.email,
        name=subscriber.name or "",
        topics=[
            f"{topic.label}={topic.query}" if topic.label else topic.query
            for topic in subscriber.topics
        ],
        timezone=subscriber.timezone,
        timezone_chosen=True,
        hour=str(subscriber.send_hour),
        frequency="daily" if subscriber.weekday is None else "weekly",
        weekday=WEEKDAYS[subscriber.weekday or 0],
    )


INVALID_EMAIL = "Enter a valid email address, like ada@example.org."


def check_form(
    session: Session, values: FormValues, *, email: bool
) -> tuple[Preferences | None, FieldErrors]:
    """Validate every field of a preferences form (and `email` on the subscribe form).

    The rules are those of `digest subscribe` (digest.preferences); each bad field
    gets its message, so one submit shows them all.
    """
    errors = FieldErrors()
    if email:
        errors.check("email", lambda: normalize_email(values.email))
        if "email" in errors:
            errors["email"] = INVALID_EMAIL
    hour = errors.check("hour", lambda: parse_hour(values.hour))
    weekly = values.frequency == "weekly"
    weekday = errors.check("frequency", lambda: parse_weekday(values.weekday)) if weekly else None
    preferences = check_preferences(
        values.topics,
        errors,
        timezone=values.timezone,
        hour=hour,
        weekday=weekday,
        daily=not weekly,
        name=values.name,
    )
    check_topic_papers(session, values.topics, errors, WEB_PAPER_HINT)
    return (None if errors else preferences), errors


@dataclass(frozen=True)
class FieldError:
    """One line of a form's error summary: a link to the field's input, and its message."""

    anchor: str  # the id of the input
    label: str
    message: str


# The fields of the preferences forms in the order they appear: summary label, input id.
FORM_FIELDS = {
    "email": ("Email address", "email"),
    "name": ("Your name", "name"),
    "topics": ("Topics", "topic-1"),
    "timezone": ("Timezone", "timezone"),
    "hour": ("Send at", "hour"),
    "frequency": ("How often", "weekday"),
}


def error_summary(errors: dict[str, str]) -> list[FieldError]:
    """The errors of a form in the order of its fields, topics by position."""
    order = list(FORM_FIELDS)
    lines: list[tuple[tuple[int, int], FieldError]] = []
    for name, message in errors.items():
        position = name.removeprefix("topic-")
        if position.isdigit():
            key = (order.index("topics"), int(position))
            line = FieldError(name, f"Topic {position}", message)
        else:
            label, anchor = FORM_FIELDS[name]
            key = (order.index(name), 0)
            line = FieldError(anchor, label, message)
        lines.append((key, line))
    return [line for _, line in sorted(lines, key=lambda pair: pair[0])]


# Where a reader finds a paper for like:ID (the CLI's hint names a command).
WEB_PAPER_HINT = (
    "here. To follow papers like one you read, "
    "use its “More like this” link in a digest or on a topic's page."
)


def unknown_paper(session: Session, query: str) -> str | None:
    """A reader's error if a like:ID in `query` names no paper here (the web's wording of
    `check_papers_exist`'s, without its CLI command), else None."""
    if "like:" not in query.casefold():
        return None
    for reference in parse_query(query).likes:
        if db.find_paper_by_reference(session, reference) is None:
            return f"like:{reference}: no such paper {WEB_PAPER_HINT}"
    return None
