"""The command line: help everywhere, exit codes, and the main job."""

import os
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import click
import pytest
from sqlalchemy import update

from digest import db
from digest.app import safe_url
from digest.cli import main, stdout_closed
from digest.models import Paper
from tests.conftest import DATA
from tests.processes import digest_env


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


COMMANDS = list(all_commands(main))


def test_there_are_commands() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"ingest", "papers", "stats", "demo", "db upgrade", "db status"} <= names


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=" ".join)
def test_every_command_has_help_with_an_example(cli, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help")
    assert result.exit_code == 0
    assert "Usage: main" in result.output or "Usage: digest" in result.output
    assert "Example" in result.output


def test_top_level_help(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    assert "ingest" in result.output


def test_help_loads_no_stage_or_database_library() -> None:
    """`digest --help` stays fast: SQLAlchemy, Alembic, premailer... load with the commands."""
    probe = (
        "import sys; from click.testing import CliRunner; from digest.cli import main; "
        "result = CliRunner().invoke(main, ['--help']); assert result.exit_code == 0; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split()
    assert "click" in loaded
    heavy = {"sqlalchemy", "alembic", "premailer", "cssutils", "jinja2", "flask", "Stemmer"}
    assert heavy.isdisjoint(loaded), heavy.intersection(loaded)


def test_ingest_reports_each_input_and_fails_when_one_fails(
    cli, seeds: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"title": "x"', encoding="utf-8")
    result = cli("ingest", str(seeds / "000_5ed1fa5957327774.txt"), str(bad))
    assert result.exit_code == 1
    assert "000_5ed1fa5957327774.txt: hf-page, 34 parsed, 34 new" in result.output
    assert f"{bad}: error: truncated or invalid JSON" in result.output
    assert "Error: 1 of 2 inputs failed" in result.output
    again = cli("ingest", str(seeds / "000_5ed1fa5957327774.txt"))
    assert again.exit_code == 0
    assert "34 parsed, 0 new, 0 updated, 34 unchanged, 0 skipped" in again.output


def test_ingest_prints_skipped_records(cli, tmp_path: Path) -> None:
    feed = tmp_path / "listing.xml"
    feed.write_bytes((DATA / "arxiv_listing.rss").read_bytes())
    result = cli("ingest", str(feed))
    assert result.exit_code == 0
    assert "2 parsed, 2 new, 0 updated, 0 unchanged, 2 skipped" in result.output
    assert (
        "  skipped record 3 ('An Older Paper, Revised'): announce type 'replace'" in result.output
    )


def test_as_of_sets_first_seen_and_resolves_year_less_dates(cli, seeds: Path) -> None:
    result = cli("ingest", str(seeds / "000_5ed1fa5957327774.txt"), "--as-of", "2025-12-01")
    assert result.exit_code == 0
    listing = cli("papers", "--search", "World Modeling Probabilistic Structure")
    assert "2024-09-10" in listing.output
    bad = cli("ingest", str(seeds), "--as-of", "last tuesday")
    assert bad.exit_code == 2
    assert "'last tuesday' is not an ISO date or datetime" in bad.output


def test_papers_and_stats(cli, seeds: Path) -> None:
    cli("ingest", str(seeds), str(DATA / "hf_daily_papers.json"))
    stats = cli("stats")
    assert "papers:         541 (1 with an arXiv id)" in stats.output
    assert "from hf_page:   540" in stats.output
    papers = cli("papers", "--search", "in-context classifiers", "--limit", "3")
    lines = papers.output.splitlines()
    assert lines[0].split() == ["id", "arxiv", "published", "votes", "sources", "title"]
    assert lines[1].split()[:5] == ["541", "2602.23229", "2026-02-26", "10", "hf_api"]
    assert cli("papers", "--limit", "0").exit_code == 2


def test_listings_print_no_control_characters(cli, factory, seeds: Path) -> None:
    """A title stored with an escape sequence (before ingest cleaned them) is listed on one
    line without it: it cannot retitle the terminal or reverse the text after it."""
    cli("ingest", str(seeds))
    with factory() as session:
        session.execute(
            update(Paper)
            .where(Paper.title.like("%World Modeling%"))
            .values(title="Ctrl\x1b]0;pwned\x07 title nul\u202eRTL\nnext")  # no NUL: PostgreSQL
        )
        session.commit()
    listing = cli("papers", "--search", "World Modeling Probabilistic Structure")
    assert listing.exit_code == 0, listing.output
    (row,) = [line for line in listing.output.splitlines() if "Ctrl" in line]
    assert row.endswith("Ctrl ]0;pwned title nulRTL next")
    assert not any(ord(c) < 32 or c == "\u202e" for c in listing.output.replace("\n", ""))


def test_demo_runs_the_main_job_into_the_maildir_outbox(cli, tmp_path: Path) -> None:
    result = cli("demo")
    assert result.exit_code == 0, result.output
    assert "papers:         540 (0 with an arXiv id)" in result.output
    assert "sent 2, empty 0, deferred 0, failed 0, unknown 0" in result.output
    outbox = tmp_path / "data" / "outbox"
    assert f"outbox:  {outbox}" in result.output
    messages = [
        message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in (outbox / "new").iterdir()
    ]
    assert sorted(m["To"] for m in messages) == ["ada@example.org", "grace@example.org"]
    preview = tmp_path / "data" / "previews" / "demo-ada.html"
    assert f"preview: {preview}" in result.output and preview.stat().st_size > 10_000
    second = cli("demo")
    assert "333 parsed, 0 new" in second.output
    assert "sent 0, empty 0" in second.output
    assert len(list((outbox / "new").iterdir())) == 2


def test_config_errors_are_one_line(cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[smtp]\nport = 'abc'\n", encoding="utf-8")
    result = cli("--config", str(config), "stats")
    assert result.exit_code == 1
    assert result.output == "Error: config: smtp.port: expected an integer, got 'abc'\n"


@pytest.mark.parametrize("command", [("stats",), ("papers",), ("papers", "--help")])
def test_output_to_a_closed_pipe_ends_quietly(
    tmp_path: Path, db_url: str, command: tuple[str, ...]
) -> None:
    """`digest papers | head -1`: the reader goes away, and that is no error to report.
    Here the pipe has no reader from the start, so every run meets it."""
    env = digest_env(tmp_path / "data", db_url)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "digest", *command],
            env=env,
            stdout=writer,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (1, b"")


def test_only_a_pipe_without_reader_counts_as_closed_output(monkeypatch) -> None:
    """A broken pipe of a connection a command made stays an error: stdout is still read."""
    reader, writer = os.pipe()
    with open(writer, "w") as output:
        monkeypatch.setattr(sys, "stdout", output)
        assert not stdout_closed()
        os.close(reader)
        assert stdout_closed()


def test_db_status_and_upgrade(cli, empty_db_url: str, monkeypatch) -> None:
    monkeypatch.setenv("DIGEST_DATABASE_URL", empty_db_url)
    head = db.head_revision()
    status = cli("db", "status")
    assert f"schema:   empty (needs {head})" in status.output
    upgrade = cli("db", "upgrade")
    assert upgrade.output.strip() == f"database at {head} (was empty)"
    status = cli("db", "status")
    assert "run `digest db upgrade`" not in status.output
    assert status.output.splitlines()[-1] == "quick check: ok"
    check = cli("db", "check")
    assert check.exit_code == 0
    done = "ok" if empty_db_url.startswith("sqlite") else "a server database checks itself"
    assert check.output.startswith(f"{safe_url(empty_db_url)}: {done}")


@pytest.mark.sqlite
@pytest.mark.parametrize("command", [("stats",), ("db", "status"), ("db", "upgrade")])
def test_unusable_databases_are_one_line_errors(cli, tmp_path: Path, monkeypatch, command) -> None:
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database, just text " * 200)
    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{corrupt}")
    result = cli(*command)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: database sqlite:///{corrupt} is corrupt (file is not a database): "
        "restore it from a backup; `digest db check` reports what is damaged\n"
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{blocker}/sub/digest.sqlite3")
    result = cli(*command)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: database sqlite:///{blocker}/sub/digest.sqlite3: ")
    assert "Not a directory" in result.output
    assert result.output.count("\n") == 1
