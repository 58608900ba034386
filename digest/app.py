"""Wiring shared by every entry point: the CLI, the scheduler service and the web app.

`App` builds, lazily and once per process, what the entry points need from the
configuration: the engine and session factory, the signing key, the mailer,
the transport, the sender, the fetcher and the scheduler service; it also
holds the clock, which an entry point reads once per command, job or request.
It imports no Click and raises only the project's own errors (`DigestError`:
configuration, schema out of date, database unavailable, files it cannot
write), which each entry point turns into a one-line message, a log line or
an error page.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from digest.errors import DatabaseUnavailable, DigestError

if TYPE_CHECKING:
    import multiprocessing

    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from digest.config import Config
    from digest.deliver import Sender, SendReport, Workers
    from digest.fetch import HttpFetcher
    from digest.ingest import InputSummary
    from digest.message import DigestMailer
    from digest.schedule import Service
    from digest.transport import Transport

# Links are signed with this key; shorter keys can be brute-forced offline.
MIN_SECRET_KEY_BYTES = 32
GENERATE_KEY_HINT = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


def utc_now() -> datetime:
    """The real clock; entry points read it once per command, job or request."""
    return datetime.now(UTC)


def safe_url(url: str) -> str:
    """A database URL fit to print: the password is masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        from digest.urls import mask_password

        return mask_password(url)


def database_error_message(exc: BaseException, url: str) -> str:
    """One line saying what went wrong with the database at `url` and what to do.

    The SQL statement and its parameters are never part of it (they may hold
    addresses and secrets); `digest -v` shows the full error.
    """
    from digest.db import error_detail

    where = safe_url(url)
    detail = error_detail(exc)
    lowered = detail.casefold()
    if isinstance(exc, ModuleNotFoundError) or "no module named" in lowered:
        return (
            f"database {where}: the driver is not installed ({detail}); "
            "for PostgreSQL run: pip install 'papers-digest[postgres]'"
        )
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return (
            f"database {where} is corrupt ({detail}): restore it from a backup; "
            "`digest db check` reports what is damaged"
        )
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return (
            f"database {where} is read-only ({detail}): check the permissions "
            "of the file and its folder"
        )
    if "locked" in lowered or "busy" in lowered:
        return f"database {where} is locked by another process ({detail}): try again"
    if "unable to open" in lowered or "connection" in lowered or "could not connect" in lowered:
        return f"cannot open database {where} ({detail}): check the URL, the server and the access"
    if "no such table" in lowered or "no such column" in lowered or "does not exist" in lowered:
        return f"database {where} does not match this version ({detail}): run `digest db upgrade`"
    return f"database {where}: {detail}"


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn driver and SQLAlchemy errors into `DatabaseUnavailable` with a one-line message."""
    from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

    try:
        yield
    except DigestError:
        raise
    except (SQLAlchemyError, NoSuchModuleError, ModuleNotFoundError) as exc:
        raise DatabaseUnavailable(database_error_message(exc, url)) from exc
    except OSError as exc:
        raise DatabaseUnavailable(f"database {safe_url(url)}: {exc}") from exc


def check_secret_key(key: str, where: str) -> str:
    """`key` if it is long enough to sign links safely, else a DigestError saying how to fix it."""
    if len(key.encode("utf-8")) < MIN_SECRET_KEY_BYTES:
        raise DigestError(
            f"{where}: the signing key is shorter than {MIN_SECRET_KEY_BYTES} bytes; "
            f"generate one with: {GENERATE_KEY_HINT}"
        )
    return key


def read_dkim_key(path: Path) -> bytes:
    """The PEM private key DKIM signs with, checked once rather than failing every message."""
    from dkim.crypto import UnparsableKeyError, parse_pem_private_key

    try:
        key = path.read_bytes()
        parse_pem_private_key(key)
    except OSError as exc:
        raise DigestError(f"mail.dkim_key_file: {exc}") from None
    except (UnparsableKeyError, ValueError, IndexError):
        # The key's bytes are a secret: never repeated in the message.
        raise DigestError(
            f"mail.dkim_key_file: {path} is not a PEM RSA private key "
            "(make one with: openssl genrsa -out dkim.pem 2048)"
        ) from None
    return key


@dataclass
class App:
    """Config, database, signing key, mailer and transport for one process, built lazily."""

    config_path: Path | None = None
    clock: Callable[[], datetime] = utc_now
    _config: Config | None = None
    _engine: Engine | None = field(default=None, repr=False)
    _sessions: sessionmaker[Session] | None = field(default=None, repr=False)
    _secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Config, clock: Callable[[], datetime] = utc_now) -> App:
        return cls(config_path=config.source, clock=clock, _config=config)

    @property
    def config(self) -> Config:
        if self._config is None:
            from digest.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    def data_dir(self) -> Path:
        """The data directory, created private (0700) the first time it is needed."""
        path = self.config.data_dir
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DigestError(f"cannot create the data directory {path}: {exc}") from None
        return path

    def engine(self) -> Engine:
        """The database engine on an up-to-date schema (the SQLite default migrates itself)."""
        if self._engine is None:
            from digest import db

            url = self.config.database_url
            with database_errors(url):
                engine = db.open_database(url)
                # SQLite's quick check reads every page (bench/quick_check.py): a
                # damaged file is refused before anything is written into it.
                problems = db.integrity_problems(engine)
            if problems:
                engine.dispose()
                raise DatabaseUnavailable(
                    f"database {safe_url(url)} is corrupt (quick check: {problems[0]}): "
                    "restore it from a backup; `digest db check` reports what is damaged"
                )
            self._engine = engine
        return self._engine

    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            from digest import db

            self._sessions = db.session_factory(self.engine())
        return self._sessions

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._sessions = None

    def secret_key(self) -> str:
        """The configured signing key, else one generated once and kept in the data dir."""
        if self._secret_key is not None:
            return self._secret_key
        if self.config.site.secret_key:
            self._secret_key = check_secret_key(self.config.site.secret_key, "site.secret_key")
            return self._secret_key
        path = self.config.data_dir / "secret_key"
        try:
            if not path.exists():
                self.data_dir()
                # Write a temporary file and link it in: a concurrent process either
                # wins the race or reads the complete key, never a partial one.
                temporary = path.with_name(f".secret_key.{os.getpid()}.{threading.get_ident()}")
                descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    handle.write(secrets.token_urlsafe(32))
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, path)
                temporary.unlink()
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise DigestError(f"cannot keep the signing key in {path}: {exc}") from None
        self._secret_key = check_secret_key(key, str(path))
        return self._secret_key

    def mailer(self) -> DigestMailer:
        from digest.message import DigestMailer, Dkim
        from digest.render import Renderer

        config = self.config
        dkim = None
        if config.mail.dkim_key_file and config.mail.dkim_selector:
            dkim = Dkim(
                config.mail.dkim_selector,
                config.mail.from_address.rpartition("@")[2],
                read_dkim_key(config.mail.dkim_key_file),
            )
        renderer = Renderer(
            templates=config.site.templates_dir,
            site_name=config.site.name,
            postal_address=config.mail.postal_address,
        )
        return DigestMailer(
            renderer=renderer,
            mail=config.mail,
            base_url=config.site.base_url,
            secret_key=self.secret_key(),
            dkim=dkim,
        )

    def transport(self) -> Transport:
        from digest.transport import MaildirTransport, SmtpTransport

        delivery = self.config.delivery
        if delivery.transport == "smtp":
            return SmtpTransport(
                self.config.smtp,
                max_per_connection=delivery.max_per_connection,
                rate=delivery.rate_limit or None,
            )
        self.data_dir()
        return MaildirTransport(delivery.maildir)

    def sender(self, should_stop: Callable[[], bool] = lambda: False) -> Sender:
        from digest.deliver import Sender

        return Sender(
            factory=self.sessions(),
            transport=self.transport(),
            mailer=self.mailer(),
            config=self.config.delivery,
            clock=self.clock,
            should_stop=should_stop,
        )

    def send_workers(self, count: int, stop: threading.Event | None = None) -> Workers:
        """`count` sender processes sharing the queue (see `digest.deliver.send_digests`).

        Each is a fresh process (spawned, not forked: the parent may run threads) with
        its own database connections and SMTP connection. Setting `stop` asks each to
        finish its message in flight and stop.
        """

        def run(dates: set[date], limit: int | None) -> list[SendReport]:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            results: multiprocessing.Queue[SendReport] = context.Queue()
            shares = [
                None if limit is None else limit // count + (n < limit % count)
                for n in range(count)
            ]
            processes = [
                context.Process(
                    target=send_worker,
                    args=(self.config, self.clock, dates, share, results),
                    name=f"digest-sender-{n + 1}",
                )
                for n, share in enumerate(shares)
                if share != 0
            ]
            for process in processes:
                process.start()
            reports: list[SendReport] = []
            stopped = False
            while len(reports) < len(processes):
                if stop is not None and stop.is_set() and not stopped:
                    stopped = True
                    for process in processes:
                        if process.pid is not None and process.is_alive():
                            os.kill(process.pid, signal.SIGTERM)
                try:
                    reports.append(results.get(timeout=0.2))
                except queue.Empty:
                    if not any(process.is_alive() for process in processes) and results.empty():
                        break
            for process in processes:
                process.join()
            lost = [p for p in processes if p.exitcode != 0]
            if lost:
                from digest.deliver import SendReport

                codes = ", ".join(f"{p.name} exited with {p.exitcode}" for p in lost)
                reports.append(SendReport(fatal=f"a sender process failed: {codes}"))
            return reports

        return run

    def fetcher(self) -> HttpFetcher:
        from digest.fetch import HttpFetcher

        settings = self.config.ingest
        return HttpFetcher(
            timeout=settings.timeout,
            retries=settings.retries,
            backoff=settings.backoff,
            host_delay=settings.host_delay,
            max_bytes=settings.max_input_bytes,
            user_agent=settings.user_agent,
        )

    def ingest(
        self,
        inputs: Sequence[str],
        now: datetime,
        on_done: Callable[[InputSummary], None] | None = None,
    ) -> list[InputSummary]:
        """Ingest files, folders or URLs as of `now` (the CLI and the scheduler's job)."""
        from digest.ingest import expand_inputs, ingest_inputs

        return ingest_inputs(
            self.sessions(),
            expand_inputs(inputs),
            now=now,
            max_bytes=self.config.ingest.max_input_bytes,
            fetcher=self.fetcher(),
            on_done=on_done,
        )

    def service(self, stop: threading.Event) -> Service:
        """The `digest run` scheduler: the ingest and dispatch jobs, stopping on `stop`."""
        from digest.schedule import Dispatcher, Service

        config = self.config
        self.engine()
        workers = config.delivery.workers
        dispatcher = Dispatcher(
            factory=self.sessions(),
            make_sender=lambda: self.sender(should_stop=stop.is_set),
            workers=self.send_workers(workers, stop) if workers > 1 else None,
            settings=config.digest,
            grace=timedelta(hours=config.schedule.grace_hours),
            lease_for=timedelta(minutes=3 * config.schedule.dispatch_minutes),
            pending_for=timedelta(days=config.web.pending_days),
        )
        return Service(
            factory=self.sessions(),
            schedule=config.schedule,
            dispatcher=dispatcher,
            ingest=lambda sources, now: self.ingest(sources, now),
            clock=self.clock,
            stop=stop,
        )


def send_worker(
    config: Config,
    clock: Callable[[], datetime],
    dates: set[date],
    limit: int | None,
    results: multiprocessing.Queue[SendReport],
) -> None:
    """One sender process of `App.send_workers`: claim and send until the queue is empty."""
    from digest.deliver import SendReport

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # the parent decides (Ctrl-C)
    app = App.from_config(config, clock=clock)
    report = SendReport()
    try:
        app.sender(should_stop=stop.is_set).send_queued(dates, report, limit)
    finally:
        results.put(report)
        app.dispose()
