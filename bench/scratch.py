"""A scratch database for a benchmark: a temporary SQLite file, or one on a PostgreSQL server."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text

from digest import db


@contextlib.contextmanager
def scratch_database(server: str | None) -> Iterator[str]:
    """A URL of an empty database: a temporary SQLite file, or a database on the server."""
    if server is None:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'claim.sqlite3'}"
        return
    base = db.engine_url(server)
    name = f"digest_bench_claim_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
