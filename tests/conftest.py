"""Shared fixtures: a fresh SQLite database per test, the seed files, a CLI runner."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from digest import db
from digest.cli import main
from digest.resources import resource_dir

DATA = Path(__file__).parent / "data"
SEEDS = resource_dir("seeds")
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'digest.sqlite3'}"


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
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `digest ...` in-process against a data directory of its own."""
    for name in ("DIGEST_CONFIG", "DIGEST_DATABASE_URL", "DIGEST_TRANSPORT", "DIGEST_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIGEST_DATA_DIR", str(tmp_path / "data"))

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
