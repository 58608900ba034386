"""The value checkers of the configuration: each takes a key's name and a raw value (from
the TOML file or the environment) and returns the value to use, or raises ConfigError
naming the key, e.g. ``smtp.port: expected an integer, got 'abc'``.

`digest.config` declares which checker each key uses (`KEYS`); URLs follow the one
rule of `digest.urls`. Checkers that need a library import it when called, so that
`digest --help` loads none of them.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

from digest.errors import ConfigError, shown
from digest.urls import MAX_FETCHED, UrlRefused, http_url, is_url, mask_password


def string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {shown(value)}")
    return value


# No count or size in this program needs more; larger ones overflow timers and SQL.
MAX_INT = 2**31 - 1


def integer(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {shown(value)}") from None
    if not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
    if abs(value) > MAX_INT:
        raise ConfigError(f"{key}: {value} is too large (at most {MAX_INT})")
    return value


def number(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {shown(value)}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {shown(value)}") from None
    if not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number, got {shown(value)}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {shown(value)}")
    return float(value)


def secret(key: str, value: Any) -> str | None:
    """A password or key: like a string, but its value is never repeated in an error."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string in quotes (the value is secret: not shown)")
    return value.strip() or None


def boolean(key: str, value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {shown(value)}")
    return value


def opt_string(key: str, value: Any) -> str | None:
    text = string(key, value).strip()
    return text or None


def postal_address(key: str, value: Any) -> str:
    """The footer's postal address: lines written in the file are joined with ", "."""
    text = ", ".join(part.strip() for part in string(key, value).splitlines() if part.strip())
    return line(key, text)


def line(key: str, value: Any) -> str:
    """A string that goes into a mail or HTTP header, a path or a footer line: no control
    characters (a CR/LF would fail every send later, not here)."""
    from digest.sources.records import CONTROL_CHARS  # imported here: `digest --help` is lean

    text = string(key, value)
    if CONTROL_CHARS.search(text):
        raise ConfigError(
            f"{key}: one line without control or direction characters, got {shown(text)}"
        )
    return text


def opt_line(key: str, value: Any) -> str | None:
    return line(key, value).strip() or None


def folder(key: str, value: Any) -> str | None:
    """An existing folder, or unset."""
    text = opt_line(key, value)
    if text is not None and not Path(text).expanduser().is_dir():
        raise ConfigError(f"{key}: {shown(text)} is not an existing folder")
    return text


def database_url(key: str, value: Any) -> str:
    from sqlalchemy.engine import make_url  # imported here: `digest --help` loads no SQLAlchemy
    from sqlalchemy.exc import ArgumentError

    text = string(key, value).strip()
    try:
        url = make_url(text)
        _ = url.port
    except (ArgumentError, ValueError):
        raise ConfigError(f"{key}: not a database URL: {shown(mask_password(text))}") from None
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"{key}: unsupported database {shown(url.drivername)} (sqlite or postgresql)"
        )
    if url.get_backend_name() == "sqlite" and _in_memory(url.database, url.query):
        raise ConfigError(
            f"{key}: an in-memory SQLite database ({shown(mask_password(text))}) loses everything "
            "when the command ends; give a file, e.g. sqlite:////var/lib/papers-digest/digest.sqlite3"
        )
    return text


def _in_memory(database: str | None, query: Mapping[str, Any]) -> bool:
    # Tests that want one open it with db.open_database("sqlite://"), not through the config.
    name = (database or "").strip()
    return (
        name in ("", ":memory:")
        or name.startswith("file::memory:")
        or query.get("mode") == "memory"
        or "mode=memory" in name
    )


def base_url(key: str, value: Any) -> str:
    """An http(s) URL with no query or fragment, in ASCII (`digest.urls.http_url`): it goes
    into every email's links and List-Unsubscribe header, with paths appended."""
    text = string(key, value).strip()
    try:
        return http_url(text.rstrip("/"), base=True, ascii=True)
    except UrlRefused as exc:
        raise ConfigError(
            f"{key}: expected an absolute http(s) URL, got {shown(mask_password(text))} ({exc})"
        ) from None


def email(key: str, value: Any) -> str:
    """A sender-side address, in ASCII: an IDN domain becomes punycode."""
    from email_validator import EmailNotValidError, validate_email

    text = string(key, value).strip()
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ConfigError(f"{key}: not an email address: {shown(text)} ({exc})") from None
    if valid.ascii_email is None:
        raise ConfigError(f"{key}: {shown(text)}: use an address whose part before the @ is ASCII")
    return valid.ascii_email


def opt_email(key: str, value: Any) -> str | None:
    return email(key, value) if string(key, value).strip() else None


def transport(key: str, value: Any) -> str:
    text = string(key, value).strip().lower()
    if text not in {"maildir", "smtp"}:
        raise ConfigError(f"{key}: unknown transport {shown(text)} (maildir or smtp)")
    return text


def positive(
    check: Callable[[str, Any], Any], at_most: float | None = None
) -> Callable[[str, Any], Any]:
    def wrapped(key: str, value: Any) -> Any:
        number = check(key, value)
        if number <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {shown(value)}")
        return _at_most(key, number, at_most)

    return wrapped


def non_negative(
    check: Callable[[str, Any], Any], at_most: float | None = None
) -> Callable[[str, Any], Any]:
    def wrapped(key: str, value: Any) -> Any:
        number = check(key, value)
        if number < 0:
            raise ConfigError(f"{key}: must not be negative, got {shown(value)}")
        return _at_most(key, number, at_most)

    return wrapped


def _at_most(key: str, number: Any, limit: float | None) -> Any:
    if limit is not None and number > limit:
        raise ConfigError(f"{key}: must be at most {limit:g}, got {shown(number)}")
    return number


def dkim_selector(key: str, value: Any) -> str | None:
    text = opt_string(key, value)
    label = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
    if text is not None and not all(label.fullmatch(part) for part in text.split(".")):
        raise ConfigError(f"{key}: not a DNS name such as 'digest': {shown(text)}")
    return text


def port(key: str, value: Any) -> int:
    number = integer(key, value)
    if not 0 < number < 65536:
        raise ConfigError(f"{key}: not a TCP port: {shown(value)}")
    return number


# Names the tz database ships that are not zones a person lives in.
_NOT_ZONES = {"localtime", "Factory", "posixrules"}


@functools.cache
def iana_timezones() -> frozenset[str]:
    """The IANA zone names a subscriber may use (read once: the scan costs milliseconds)."""
    return frozenset(
        name
        for name in available_timezones()
        if name not in _NOT_ZONES and not name.startswith(("posix/", "right/"))
    )


@functools.cache
def canonical_timezones() -> tuple[str, ...]:
    """The zones a form lists, sorted: the tz database's zone.tab (one canonical name per
    region, none of the backward-compatibility aliases such as Africa/Asmera) and UTC.
    Aliases stay valid (`iana_timezones`); without zone.tab, every zone is listed."""
    try:
        table = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text("utf-8")
    except (ModuleNotFoundError, OSError):
        return tuple(sorted(iana_timezones()))
    names = {
        fields[2]
        for line in table.splitlines()
        if not line.startswith("#") and len(fields := line.split("\t")) >= 3
    }
    return tuple(sorted((names | {"UTC"}) & iana_timezones()))


def timezone(key: str, value: Any) -> str:
    name = string(key, value).strip()
    if name not in iana_timezones():
        raise ConfigError(f"{key}: unknown IANA timezone {shown(name)} (e.g. Europe/Paris)")
    return name


def hour(key: str, value: Any) -> int:
    number = integer(key, value)
    if not 0 <= number <= 23:
        raise ConfigError(f"{key}: hour must be 0-23, got {shown(value)}")
    return number


def string_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key}: expected a list of strings, got {shown(value)}")
    return [item.strip() for item in value]


def sources(key: str, value: Any) -> list[str]:
    """Files, folders or URLs to ingest: a URL is checked now as `digest ingest` would
    before fetching it, so a bad one stops `digest run` at start rather than each ingest."""
    names = string_list(key, value)
    for source in names:
        if is_url(source):
            try:
                http_url(source, max_length=MAX_FETCHED)
            except UrlRefused as exc:
                raise ConfigError(f"{key}: {shown(mask_password(source))}: {exc}") from None
    return names


def cron(key: str, value: Any) -> str:
    from apscheduler.triggers.cron import CronTrigger

    text = string(key, value).strip()
    try:
        CronTrigger.from_crontab(text, timezone="UTC")
    except ValueError as exc:
        raise ConfigError(f"{key}: not a cron expression: {shown(text)} ({exc})") from None
    return text


def rate_limit(key: str, value: Any) -> str:
    """A Flask-Limiter rate string such as "10 per hour;3 per minute"."""
    from limits import parse_many

    text = string(key, value).strip()
    try:
        parse_many(text)
    except ValueError as exc:
        raise ConfigError(
            f"{key}: not a rate limit like '10 per hour': {shown(text)} ({exc})"
        ) from None
    return text
