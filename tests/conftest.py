"""Shared fixtures: a fresh database per test, the seed files, a CLI runner.

The suite runs on SQLite (a file per test), or on PostgreSQL when
DIGEST_TEST_DATABASE_URL names a server database the tests may create databases
from (`.ci/with-postgres` starts a throwaway one): each test then gets a database
of its own, cloned from a template migrated once per run. Tests that only make
sense on one backend carry the `sqlite` or `postgresql` marker; the others are
deselected.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from digest import db
from digest.cli import main
from digest.resources import resource_dir

DATA = Path(__file__).parent / "data"
SEEDS = resource_dir("seeds")
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)

TEST_SERVER_URL = os.environ.get("DIGEST_TEST_DATABASE_URL")
BACKEND = "postgresql" if TEST_SERVER_URL else "sqlite"


def pytest_report_header() -> str:
    return f"database backend: {BACKEND}" + (
        f" ({db.engine_url(TEST_SERVER_URL).render_as_string()})" if TEST_SERVER_URL else ""
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests marked for the other backend."""
    other = "sqlite" if BACKEND == "postgresql" else "postgresql"
    deselected = [item for item in items if item.get_closest_marker(other)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(other)]


class Databases:
    """Fresh databases for tests: SQLite files, or databases on the PostgreSQL test server.

    On PostgreSQL one worker thread creates and drops the databases over one admin
    connection, keeping the next migrated database ready and dropping used ones while
    the tests run (a CREATE DATABASE costs a few hundred milliseconds).
    """

    def __init__(self, server_url: str | None) -> None:
        self.server = db.engine_url(server_url) if server_url else None
        self.prefix = f"digest_test_{os.getpid()}"
        self.numbers = itertools.count()
        self.worker = ThreadPoolExecutor(max_workers=1)
        self.admin: Engine | None = None
        self.template: str | None = None
        self.spare: Future[str] | None = None
        self.live: set[str] = set()

    def _execute(self, statement: str) -> None:
        assert self.server is not None
        if self.admin is None:
            self.admin = create_engine(self.server, isolation_level="AUTOCOMMIT", pool_size=1)
        with self.admin.connect() as connection:
            connection.execute(text(statement))

    def _url(self, name: str) -> str:
        assert self.server is not None
        return self.server.set(database=name).render_as_string(hide_password=False)

    def _create(self, template: str) -> str:
        if template == f"{self.prefix}_template" and self.template is None:
            self.template = template
            self._execute(f"CREATE DATABASE {template} TEMPLATE template0")
            engine = db.create_db_engine(self._url(template))
            db.upgrade(engine)
            engine.dispose()
        name = f"{self.prefix}_{next(self.numbers)}"
        self._execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        self.live.add(name)
        return self._url(name)

    def _drop(self, name: str) -> None:
        self._execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.live.discard(name)

    def new(self, folder: Path, *, migrated: bool = True) -> str:
        """The URL of a new database: at the head schema, or empty if not `migrated`.

        An SQLite file is always empty at first; it migrates itself when opened.
        """
        if self.server is None:
            return f"sqlite:///{folder / 'digest.sqlite3'}"
        if not migrated:
            return self.worker.submit(self._create, "template0").result()
        ready = self.spare or self.worker.submit(self._create, f"{self.prefix}_template")
        self.spare = self.worker.submit(self._create, f"{self.prefix}_template")
        return ready.result()

    def clone(self, url: str, folder: Path) -> str:
        """A new database holding a copy of the one at `url` (no one may be connected to it)."""
        if self.server is None:
            copy = folder / "digest.sqlite3"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(url.removeprefix("sqlite:///"), copy)
            return f"sqlite:///{copy}"
        return self.worker.submit(self._create, url.rsplit("/", 1)[1]).result()

    def drop(self, url: str) -> None:
        if self.server is not None:
            self.worker.submit(self._drop, url.rsplit("/", 1)[1])

    def close(self) -> None:
        """Drop every database this run made (the template last) and stop the worker."""
        if self.spare is not None:
            self.spare.result()
        self.worker.shutdown(wait=True)
        for name in list(self.live):
            self._drop(name)
        if self.template is not None:
            self._drop(self.template)
        if self.admin is not None:
            self.admin.dispose()


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    manager = Databases(TEST_SERVER_URL)
    yield manager
    manager.close()


@pytest.fixture
def db_url(databases: Databases, tmp_path: Path) -> Iterator[str]:
    """This test's database, also the one `cli` and `digest` processes use.

    On SQLite it is the default database of the data directory `cli` uses.
    """
    folder = tmp_path / "data"
    url = databases.new(folder)
    yield url
    databases.drop(url)


@pytest.fixture
def empty_db_url(databases: Databases, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all."""
    folder = tmp_path / "empty"
    url = databases.new(folder, migrated=False)
    yield url
    databases.drop(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = db.open_database(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return db.session_factory(engine)


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    """A copy of the bundled seed captures."""
    target = tmp_path / "seeds"
    shutil.copytree(SEEDS, target)
    return target


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Callable[..., Result]:
    """Run `digest ...` in-process against a data directory and the test's database."""
    for name in ("DIGEST_CONFIG", "DIGEST_DATABASE_URL", "DIGEST_TRANSPORT", "DIGEST_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))
    if BACKEND == "postgresql":
        monkeypatch.setenv("DIGEST_DATABASE_URL", db_url)

    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return run


@pytest.fixture
def smtp_server():
    from tests.smtp_server import SmtpServer

    with SmtpServer() as server:
        yield server


# CI runs the property tests on a fixed example set, so a run cannot flake; locally
# every run explores new examples.
if os.environ.get("CI"):
    from hypothesis import settings as hypothesis_settings

    hypothesis_settings.register_profile("ci", derandomize=True)
    hypothesis_settings.load_profile("ci")
