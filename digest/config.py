"""Configuration: built-in defaults < TOML file < environment, validated once.

`load_config(path, environ)` returns a frozen `Config`. Every key is declared
once in `KEYS` with its type, default and (for secrets and URLs) the
environment variable that overrides it; `config.example.toml` documents them.
A bad value raises `ConfigError` naming the key, e.g.
``smtp.port: expected an integer, got 'abc'``.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import available_timezones

from digest.errors import ConfigError, shown


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """Where the embedded database and the Maildir outbox live by default."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "papers-digest"


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {shown(value)}")
    return value


# No count or size in this program needs more; larger ones overflow timers and SQL.
MAX_INT = 2**31 - 1


def _int(key: str, value: Any) -> int:
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


def _float(key: str, value: Any) -> float:
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


def _secret(key: str, value: Any) -> str | None:
    """A password or key: like a string, but its value is never repeated in an error."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string in quotes (the value is secret: not shown)")
    return value.strip() or None


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {shown(value)}")
    return value


def _opt_str(key: str, value: Any) -> str | None:
    text = _str(key, value).strip()
    return text or None


def _postal_address(key: str, value: Any) -> str:
    """The footer's postal address: lines written in the file are joined with ", "."""
    text = ", ".join(part.strip() for part in _str(key, value).splitlines() if part.strip())
    return _line(key, text)


def _line(key: str, value: Any) -> str:
    """A string that goes into a mail or HTTP header, a path or a footer line: no control
    characters (a CR/LF would fail every send later, not here)."""
    from digest.sources.records import CONTROL_CHARS  # imported here: `digest --help` is lean

    text = _str(key, value)
    if CONTROL_CHARS.search(text):
        raise ConfigError(
            f"{key}: one line without control or direction characters, got {shown(text)}"
        )
    return text


def _opt_line(key: str, value: Any) -> str | None:
    return _line(key, value).strip() or None


def _folder(key: str, value: Any) -> str | None:
    """An existing folder, or unset."""
    text = _opt_line(key, value)
    if text is not None and not Path(text).expanduser().is_dir():
        raise ConfigError(f"{key}: {shown(text)} is not an existing folder")
    return text


def mask_password(url: str) -> str:
    """`url` with any password in it replaced by ***, even when it does not parse."""
    return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


def _database_url(key: str, value: Any) -> str:
    from sqlalchemy.engine import make_url  # imported here: `digest --help` loads no SQLAlchemy
    from sqlalchemy.exc import ArgumentError

    text = _str(key, value).strip()
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


def _http_url(key: str, value: Any) -> str:
    """An absolute http(s) URL with a host: it goes into every email's links and headers."""
    text = _line(key, value).strip().rstrip("/")
    parts = urlsplit(text)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or not port_ok
        or any(char.isspace() for char in text)
    ):
        raise ConfigError(
            f"{key}: expected an absolute http(s) URL with a host and no spaces, "
            f"got {shown(mask_password(text))}"
        )
    if "@" in parts.netloc:  # it would go into every link of every email
        raise ConfigError(f"{key}: a public URL carries no user name or password")
    return text


def _email(key: str, value: Any) -> str:
    """A sender-side address, in ASCII: an IDN domain becomes punycode."""
    from email_validator import EmailNotValidError, validate_email

    text = _str(key, value).strip()
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ConfigError(f"{key}: not an email address: {shown(text)} ({exc})") from None
    if valid.ascii_email is None:
        raise ConfigError(f"{key}: {shown(text)}: use an address whose part before the @ is ASCII")
    return valid.ascii_email


def _opt_email(key: str, value: Any) -> str | None:
    return _email(key, value) if _str(key, value).strip() else None


def _transport(key: str, value: Any) -> str:
    text = _str(key, value).strip().lower()
    if text not in {"maildir", "smtp"}:
        raise ConfigError(f"{key}: unknown transport {shown(text)} (maildir or smtp)")
    return text


def _positive(
    check: Callable[[str, Any], Any], at_most: float | None = None
) -> Callable[[str, Any], Any]:
    def wrapped(key: str, value: Any) -> Any:
        number = check(key, value)
        if number <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {shown(value)}")
        return _at_most(key, number, at_most)

    return wrapped


def _non_negative(
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


def _dkim_selector(key: str, value: Any) -> str | None:
    text = _opt_str(key, value)
    label = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
    if text is not None and not all(label.fullmatch(part) for part in text.split(".")):
        raise ConfigError(f"{key}: not a DNS name such as 'digest': {shown(text)}")
    return text


def _port(key: str, value: Any) -> int:
    port = _int(key, value)
    if not 0 < port < 65536:
        raise ConfigError(f"{key}: not a TCP port: {shown(value)}")
    return port


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


def _timezone(key: str, value: Any) -> str:
    name = _str(key, value).strip()
    if name not in iana_timezones():
        raise ConfigError(f"{key}: unknown IANA timezone {shown(name)} (e.g. Europe/Paris)")
    return name


def _hour(key: str, value: Any) -> int:
    hour = _int(key, value)
    if not 0 <= hour <= 23:
        raise ConfigError(f"{key}: hour must be 0-23, got {shown(value)}")
    return hour


def _str_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key}: expected a list of strings, got {shown(value)}")
    return [item.strip() for item in value]


def _cron(key: str, value: Any) -> str:
    from apscheduler.triggers.cron import CronTrigger

    text = _str(key, value).strip()
    try:
        CronTrigger.from_crontab(text, timezone="UTC")
    except ValueError as exc:
        raise ConfigError(f"{key}: not a cron expression: {shown(text)} ({exc})") from None
    return text


def _rate_limit(key: str, value: Any) -> str:
    """A Flask-Limiter rate string such as "10 per hour;3 per minute"."""
    from limits import parse_many

    text = _str(key, value).strip()
    try:
        parse_many(text)
    except ValueError as exc:
        raise ConfigError(
            f"{key}: not a rate limit like '10 per hour': {shown(text)} ({exc})"
        ) from None
    return text


@dataclass(frozen=True)
class Key:
    """One configuration key: its parser, default and overriding env variable."""

    parse: Callable[[str, Any], Any]
    default: Any = None
    env: str | None = None


HOUR = 3600
DAY = 86_400
MAX_WORKERS = 32

KEYS: dict[str, Key] = {
    "data_dir": Key(_opt_line, None, "DIGEST_DATA_DIR"),
    "database.url": Key(_database_url, None, "DIGEST_DATABASE_URL"),
    "smtp.host": Key(_opt_line, None, "DIGEST_SMTP_HOST"),
    "smtp.port": Key(_port, 587, "DIGEST_SMTP_PORT"),
    "smtp.username": Key(_opt_line, None, "DIGEST_SMTP_USERNAME"),
    "smtp.password": Key(_secret, None, "DIGEST_SMTP_PASSWORD"),
    "smtp.starttls": Key(_bool, True),
    "smtp.ssl": Key(_bool, False),
    "smtp.timeout": Key(_positive(_float, HOUR), 30.0),
    "delivery.transport": Key(_transport, None, "DIGEST_TRANSPORT"),
    "delivery.maildir": Key(_opt_line, None),
    "delivery.max_per_connection": Key(_positive(_int), 100),
    "delivery.rate_limit": Key(_non_negative(_float, 1e6), 0.0),
    "delivery.lease_seconds": Key(_positive(_int, DAY), 600),
    "delivery.retry_base_seconds": Key(_positive(_int, DAY), 60),
    "delivery.workers": Key(_positive(_int, MAX_WORKERS), 1),
    "mail.from_address": Key(_email, "digest@localhost.localdomain"),
    "mail.from_name": Key(_line, "Papers Digest"),
    "mail.reply_to": Key(_opt_email, None),
    "mail.postal_address": Key(_postal_address, ""),
    "mail.unsubscribe_mailto": Key(_opt_email, None),
    "mail.dkim_selector": Key(_dkim_selector, None),
    "mail.dkim_key_file": Key(_opt_line, None, "DIGEST_DKIM_KEY_FILE"),
    "site.base_url": Key(_http_url, "http://localhost:8000", "DIGEST_BASE_URL"),
    "site.secret_key": Key(_secret, None, "DIGEST_SECRET_KEY"),
    "site.name": Key(_line, "papers digest"),
    "site.templates_dir": Key(_folder, None),
    "digest.lookback_days": Key(_positive(_int, 3660), 7),
    "digest.max_items": Key(_positive(_int), 20),
    "digest.max_per_topic": Key(_positive(_int), 10),
    "digest.max_trending": Key(_non_negative(_int), 5),
    "digest.min_trending_gain": Key(_positive(_int), 1),
    "digest.gravity": Key(_positive(_float, 10), 1.8),
    "digest.min_relevance": Key(_non_negative(_float, 1), 0.3),
    "digest.send_empty": Key(_bool, False),
    "digest.default_timezone": Key(_timezone, "UTC"),
    "digest.default_hour": Key(_hour, 7),
    "schedule.sources": Key(_str_list, []),
    "schedule.ingest_cron": Key(_cron, "0 */3 * * *"),
    "schedule.dispatch_minutes": Key(_positive(_int, 1440), 5),
    "schedule.grace_hours": Key(_positive(_float, 48), 6.0),
    "ingest.max_input_bytes": Key(_positive(_int, 2**30), 20 * 1024 * 1024),
    "ingest.timeout": Key(_positive(_float, HOUR), 30.0),
    "ingest.retries": Key(_non_negative(_int, 20), 3),
    "ingest.backoff": Key(_non_negative(_float, HOUR), 2.0),
    "ingest.host_delay": Key(_non_negative(_float, HOUR), 3.0),
    "ingest.user_agent": Key(_line, "papers-digest/0.1 (+self-hosted)"),
    "web.host": Key(_line, "127.0.0.1", "DIGEST_WEB_HOST"),
    "web.port": Key(_port, 8000, "DIGEST_WEB_PORT"),
    "web.threads": Key(_positive(_int), 8),
    "web.proxy_hops": Key(_non_negative(_int), 0),
    "web.confirm_hours": Key(_positive(_float), 48.0),
    "web.pending_days": Key(_positive(_float), 7.0),
    "web.resend_minutes": Key(_non_negative(_float), 60.0),
    "web.subscribe_rate_limit": Key(_rate_limit, "10 per hour;3 per minute"),
    "web.api_rate_limit": Key(_rate_limit, "120 per minute"),
}


@dataclass(frozen=True)
class SmtpConfig:
    host: str | None
    port: int
    username: str | None
    password: str | None
    starttls: bool
    ssl: bool
    timeout: float


@dataclass(frozen=True)
class DeliveryConfig:
    """How `digest send` delivers; see the [delivery] section of config.example.toml."""

    transport: str = "maildir"
    maildir: Path = Path("outbox")
    max_per_connection: int = 100
    rate_limit: float = 0.0
    lease_seconds: int = 600
    retry_base_seconds: int = 60
    workers: int = 1


@dataclass(frozen=True)
class ScheduleConfig:
    """What `digest run` does and when; see the [schedule] section of config.example.toml."""

    sources: tuple[str, ...] = ()
    ingest_cron: str = "0 */3 * * *"
    dispatch_minutes: int = 5
    grace_hours: float = 6.0


@dataclass(frozen=True)
class WebConfig:
    """The web front (`digest serve`); see the [web] section of config.example.toml."""

    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 8
    proxy_hops: int = 0
    confirm_hours: float = 48.0
    pending_days: float = 7.0
    resend_minutes: float = 60.0
    subscribe_rate_limit: str = "10 per hour;3 per minute"
    api_rate_limit: str = "120 per minute"


@dataclass(frozen=True)
class IngestConfig:
    max_input_bytes: int
    timeout: float
    retries: int
    backoff: float
    host_delay: float
    user_agent: str


@dataclass(frozen=True)
class DigestSettings:
    """How digests are selected; see the [digest] section of config.example.toml."""

    lookback_days: int = 7
    max_items: int = 20
    max_per_topic: int = 10
    max_trending: int = 5
    min_trending_gain: int = 1
    gravity: float = 1.8
    min_relevance: float = 0.3
    send_empty: bool = False
    default_timezone: str = "UTC"
    default_hour: int = 7


@dataclass(frozen=True)
class MailConfig:
    from_address: str
    from_name: str
    reply_to: str | None
    postal_address: str
    unsubscribe_mailto: str | None = None
    dkim_selector: str | None = None
    dkim_key_file: Path | None = None


@dataclass(frozen=True)
class SiteConfig:
    base_url: str
    secret_key: str | None
    name: str = "papers digest"
    templates_dir: Path | None = None


@dataclass(frozen=True)
class Config:
    data_dir: Path
    database_url: str
    delivery: DeliveryConfig
    smtp: SmtpConfig
    mail: MailConfig
    site: SiteConfig
    ingest: IngestConfig
    digest: DigestSettings
    schedule: ScheduleConfig = ScheduleConfig()
    web: WebConfig = WebConfig()
    source: Path | None = None

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _flatten(table: Mapping[str, Any], path: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{name}.{sub}"] = subvalue
        else:
            flat[name] = value
    unknown = sorted(set(flat) - set(KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {shown(unknown[0])}")
    return flat


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning I/O and syntax errors into ConfigError."""
    import tomllib  # its regular expressions cost more than the rest of `digest --help`

    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from defaults, an optional TOML file and the environment."""
    env = os.environ if environ is None else environ
    if path is None and env.get("DIGEST_CONFIG"):
        path = Path(env["DIGEST_CONFIG"])
    raw = _flatten(read_toml(path), path) if path is not None else {}
    values: dict[str, Any] = {}
    for name, key in KEYS.items():
        value = raw.get(name, key.default)
        if key.env and env.get(key.env) is not None:
            value = env[key.env]
        values[name] = None if value is None else key.parse(name, value)

    data_dir = _path(values["data_dir"]) or default_data_dir(env)
    database_url = values["database.url"] or f"sqlite:///{data_dir / 'digest.sqlite3'}"
    if values["smtp.ssl"] and values["smtp.starttls"] and "smtp.starttls" in raw:
        raise ConfigError("smtp.starttls: cannot be combined with smtp.ssl (implicit TLS)")
    if bool(values["mail.dkim_selector"]) != bool(values["mail.dkim_key_file"]):
        raise ConfigError("mail.dkim_selector and mail.dkim_key_file: set both to sign, or neither")
    transport = values["delivery.transport"] or ("smtp" if values["smtp.host"] else "maildir")
    if transport == "smtp" and not values["smtp.host"]:
        raise ConfigError("smtp.host: required when delivery.transport is 'smtp'")
    maildir = _path(values["delivery.maildir"])
    return Config(
        data_dir=data_dir,
        database_url=database_url,
        delivery=DeliveryConfig(
            transport=transport,
            maildir=maildir or data_dir / "outbox",
            max_per_connection=values["delivery.max_per_connection"],
            rate_limit=values["delivery.rate_limit"],
            lease_seconds=values["delivery.lease_seconds"],
            retry_base_seconds=values["delivery.retry_base_seconds"],
            workers=values["delivery.workers"],
        ),
        smtp=SmtpConfig(
            host=values["smtp.host"],
            port=values["smtp.port"],
            username=values["smtp.username"],
            password=values["smtp.password"],
            starttls=values["smtp.starttls"] and not values["smtp.ssl"],
            ssl=values["smtp.ssl"],
            timeout=values["smtp.timeout"],
        ),
        mail=MailConfig(
            from_address=values["mail.from_address"],
            from_name=values["mail.from_name"],
            reply_to=values["mail.reply_to"],
            postal_address=values["mail.postal_address"],
            unsubscribe_mailto=values["mail.unsubscribe_mailto"],
            dkim_selector=values["mail.dkim_selector"],
            dkim_key_file=_path(values["mail.dkim_key_file"]),
        ),
        site=SiteConfig(
            base_url=values["site.base_url"],
            secret_key=values["site.secret_key"],
            name=values["site.name"],
            templates_dir=_path(values["site.templates_dir"]),
        ),
        ingest=IngestConfig(
            max_input_bytes=values["ingest.max_input_bytes"],
            timeout=values["ingest.timeout"],
            retries=values["ingest.retries"],
            backoff=values["ingest.backoff"],
            host_delay=values["ingest.host_delay"],
            user_agent=values["ingest.user_agent"],
        ),
        digest=DigestSettings(
            **{
                name.split(".", 1)[1]: value
                for name, value in values.items()
                if name.startswith("digest.")
            }
        ),
        schedule=ScheduleConfig(
            sources=tuple(values["schedule.sources"]),
            ingest_cron=values["schedule.ingest_cron"],
            dispatch_minutes=values["schedule.dispatch_minutes"],
            grace_hours=values["schedule.grace_hours"],
        ),
        web=WebConfig(
            **{
                name.split(".", 1)[1]: value
                for name, value in values.items()
                if name.startswith("web.")
            }
        ),
        source=path,
    )
