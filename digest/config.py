"""Configuration: built-in defaults < TOML file < environment, validated once.

`load_config(path, environ)` returns a frozen `Config`. Every key is declared
once in `KEYS` with its checker (`digest.config_values`), default and (for
secrets and URLs) the environment variable that overrides it;
`config.example.toml` documents them.
A bad value raises `ConfigError` naming the key, e.g.
``smtp.port: expected an integer, got 'abc'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digest import config_values as check
from digest.errors import ConfigError, shown


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """Where the embedded database and the Maildir outbox live by default."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "papers-digest"


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
    "data_dir": Key(check.opt_line, None, "DIGEST_DATA_DIR"),
    "database.url": Key(check.database_url, None, "DIGEST_DATABASE_URL"),
    "smtp.host": Key(check.opt_line, None, "DIGEST_SMTP_HOST"),
    "smtp.port": Key(check.port, 587, "DIGEST_SMTP_PORT"),
    "smtp.username": Key(check.opt_line, None, "DIGEST_SMTP_USERNAME"),
    "smtp.password": Key(check.secret, None, "DIGEST_SMTP_PASSWORD"),
    "smtp.starttls": Key(check.boolean, True),
    "smtp.ssl": Key(check.boolean, False),
    "smtp.timeout": Key(check.positive(check.number, HOUR), 30.0),
    "delivery.transport": Key(check.transport, None, "DIGEST_TRANSPORT"),
    "delivery.maildir": Key(check.opt_line, None),
    "delivery.max_per_connection": Key(check.positive(check.integer), 100),
    "delivery.rate_limit": Key(check.non_negative(check.number, 1e6), 0.0),
    "delivery.lease_seconds": Key(check.positive(check.integer, DAY), 600),
    "delivery.retry_base_seconds": Key(check.positive(check.integer, DAY), 60),
    "delivery.workers": Key(check.positive(check.integer, MAX_WORKERS), 1),
    "mail.from_address": Key(check.email, "digest@localhost.localdomain"),
    "mail.from_name": Key(check.line, "Papers Digest"),
    "mail.reply_to": Key(check.opt_email, None),
    "mail.postal_address": Key(check.postal_address, ""),
    "mail.unsubscribe_mailto": Key(check.opt_email, None),
    "mail.dkim_selector": Key(check.dkim_selector, None),
    "mail.dkim_key_file": Key(check.opt_line, None, "DIGEST_DKIM_KEY_FILE"),
    "site.base_url": Key(check.base_url, "http://localhost:8000", "DIGEST_BASE_URL"),
    "site.secret_key": Key(check.secret, None, "DIGEST_SECRET_KEY"),
    "site.name": Key(check.line, "papers digest"),
    "site.templates_dir": Key(check.folder, None),
    "digest.lookback_days": Key(check.positive(check.integer, 3660), 7),
    "digest.max_items": Key(check.positive(check.integer), 20),
    "digest.max_per_topic": Key(check.positive(check.integer), 10),
    "digest.max_trending": Key(check.non_negative(check.integer), 5),
    "digest.min_trending_gain": Key(check.positive(check.integer), 1),
    "digest.gravity": Key(check.positive(check.number, 10), 1.8),
    "digest.min_relevance": Key(check.non_negative(check.number, 1), 0.3),
    "digest.send_empty": Key(check.boolean, False),
    "digest.default_timezone": Key(check.timezone, "UTC"),
    "digest.default_hour": Key(check.hour, 7),
    "schedule.sources": Key(check.sources, []),
    "schedule.ingest_cron": Key(check.cron, "0 */3 * * *"),
    "schedule.dispatch_minutes": Key(check.positive(check.integer, 1440), 5),
    "schedule.grace_hours": Key(check.positive(check.number, 48), 6.0),
    "ingest.max_input_bytes": Key(check.positive(check.integer, 2**30), 20 * 1024 * 1024),
    "ingest.timeout": Key(check.positive(check.number, HOUR), 30.0),
    "ingest.retries": Key(check.non_negative(check.integer, 20), 3),
    "ingest.backoff": Key(check.non_negative(check.number, HOUR), 2.0),
    "ingest.host_delay": Key(check.non_negative(check.number, HOUR), 3.0),
    "ingest.user_agent": Key(check.line, "papers-digest/0.1 (+self-hosted)"),
    "web.host": Key(check.line, "127.0.0.1", "DIGEST_WEB_HOST"),
    "web.port": Key(check.port, 8000, "DIGEST_WEB_PORT"),
    "web.threads": Key(check.positive(check.integer), 8),
    "web.proxy_hops": Key(check.non_negative(check.integer), 0),
    "web.confirm_hours": Key(check.positive(check.number), 48.0),
    "web.pending_days": Key(check.positive(check.number), 7.0),
    "web.resend_minutes": Key(check.non_negative(check.number), 60.0),
    "web.subscribe_rate_limit": Key(check.rate_limit, "10 per hour;3 per minute"),
    "web.api_rate_limit": Key(check.rate_limit, "120 per minute"),
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


def _section(values: dict[str, Any], section: str) -> dict[str, Any]:
    """The keys of one config section, without the section's prefix."""
    prefix = f"{section}."
    return {
        name.removeprefix(prefix): value
        for name, value in values.items()
        if name.startswith(prefix)
    }


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
        # The file's value is checked even when the environment overrides it: it is still
        # wrong, and would be used as soon as a shell or unit without the variable runs.
        value = raw.get(name, key.default)
        override = env.get(key.env) if key.env else None
        try:
            values[name] = None if value is None else key.parse(name, value)
        except ConfigError as exc:
            if override is not None:
                raise ConfigError(f"{exc} (in {path}; {key.env} overrides it)") from None
            raise
        if override is not None:
            values[name] = key.parse(name, override)

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
        ingest=IngestConfig(**_section(values, "ingest")),
        digest=DigestSettings(**_section(values, "digest")),
        schedule=ScheduleConfig(
            sources=tuple(values["schedule.sources"]),
            ingest_cron=values["schedule.ingest_cron"],
            dispatch_minutes=values["schedule.dispatch_minutes"],
            grace_hours=values["schedule.grace_hours"],
        ),
        web=WebConfig(**_section(values, "web")),
        source=path,
    )
