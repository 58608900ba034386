"""`digest subscribers import` and `export`: round trips, bad rows, batches, consent."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import select, text

from digest import db, subscribers_csv
from digest.models import Subscriber
from digest.subscribers_csv import ImportInterrupted, import_subscribers

HEADER = "email,topics,timezone,hour,frequency,name,status\n"
NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)


def write(tmp_path: Path, body: str, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def stored(db_url: str) -> dict[str, tuple]:
    """email key -> (email, name, status, timezone, hour, weekday, [topic titles])."""
    engine = db.open_database(db_url)
    with db.session_factory(engine)() as session:
        rows = {
            s.email_key: (
                s.email,
                s.name,
                s.status,
                s.timezone,
                s.send_hour,
                s.weekday,
                [(t.label, t.query) for t in s.topics],
            )
            for s in db.list_subscribers(session)
        }
    engine.dispose()
    return rows


@freeze_time("2026-11-25 09:30:00")
def test_import_adds_then_updates_and_export_round_trips(cli, tmp_path: Path, db_url) -> None:
    people = write(
        tmp_path,
        HEADER + "Ada@Example.org,Diffusion=Diffusion Models -survey; rlhf OR dpo,Europe/London,6,"
        "daily,Ada Lovelace,\n"
        "bob@example.org,*,,,weekly (fri),,pending\n"
        '"carol@example.org","cat:cs.CL; ""machine translation""",Asia/Kolkata,8,weekly mon,'
        '"Carol, PhD",unsubscribed\n',
    )
    first = cli("subscribers", "import", str(people))
    assert first.exit_code == 0, first.output
    assert first.output == "added 3, updated 0, unchanged 0, bad rows 0\n"
    assert stored(db_url) == {
        "ada@example.org": (
            "Ada@example.org",
            "Ada Lovelace",
            "active",
            "Europe/London",
            6,
            None,
            [("Diffusion", "diffusion models -survey"), (None, "rlhf OR dpo")],
        ),
        "bob@example.org": ("bob@example.org", None, "pending", "UTC", 7, 4, [(None, "*")]),
        "carol@example.org": (
            "carol@example.org",
            "Carol, PhD",
            "unsubscribed",
            "Asia/Kolkata",
            8,
            0,
            [("cat:cs.CL", 'cat:"cs cl"'), (None, '"machine translation"')],
        ),
    }
    exported = cli("subscribers", "export")
    assert exported.output.splitlines() == [
        "email,topics,timezone,hour,frequency,name,status",
        "Ada@example.org,Diffusion=diffusion models -survey; rlhf OR dpo,Europe/London,6,"
        "daily,Ada Lovelace,active",
        "bob@example.org,*,UTC,7,weekly (fri),,pending",
        'carol@example.org,"cat:cs.CL; ""machine translation""",Asia/Kolkata,8,'
        'weekly (mon),"Carol, PhD",unsubscribed',
    ]
    # The export imports back unchanged, into this database or an empty one.
    again = write(tmp_path, exported.output, "export.csv")
    assert cli("subscribers", "import", str(again)).output == (
        "added 0, updated 0, unchanged 3, bad rows 0\n"
    )
    before = stored(db_url)
    engine = db.open_database(db_url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM subscribers"))
    engine.dispose()
    assert cli("subscribers", "import", str(again)).output.startswith("added 3,")
    assert stored(db_url) == before
    assert cli("subscribers", "export").output == exported.output
    # Empty cells keep what a subscriber has; given ones change it.
    change = write(tmp_path, "email,hour,topics,frequency\nADA@example.org,,llm,weekly sun\n")
    assert cli("subscribers", "import", str(change)).output.startswith("added 0, updated 1,")
    ada = stored(db_url)["ada@example.org"]
    assert ada == ("ADA@example.org", "Ada Lovelace", "active", "Europe/London", 6, 6, ada[6])
    assert ada[6] == [(None, "llm")]


def test_each_bad_row_is_one_line_and_the_rest_is_imported(cli, tmp_path: Path, db_url) -> None:
    people = write(
        tmp_path,
        HEADER + "ok1@example.org,graph,,,,,\n"
        "not-an-address,graph,,,,,\n"
        "tz@example.org,graph,Mars/Olympus,,,,\n"
        "hour@example.org,graph,,24,,,\n"
        "hour2@example.org,graph,,7am,,,\n"
        "freq@example.org,graph,,,fortnightly,,\n"
        "status@example.org,graph,,,,,vip\n"
        "topic@example.org,graph; -survey,,,,,\n"  # each topic named as typed, trimmed
        "none@example.org,,,,,,\n"
        "bidi@example.org,graph,,,,Ada\u202eecalevol,\n"
        'multi@example.org,"graph;\nspeech",,,,,\n'
        "cells@example.org,graph,,,,\n"
        "OK1@example.org,speech,,,,,\n"
        "ok2@example.org,speech,,,,,\n",
    )
    result = cli("subscribers", "import", str(people))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{people}:3: invalid email address 'not-an-address': "
        "An email address must have an @-sign.",
        f"{people}:4: unknown timezone 'Mars/Olympus': use an IANA name such as Europe/Paris",
        f"{people}:5: hour must be between 0 and 23, got 24",
        f"{people}:6: hour must be between 0 and 23, got '7am'",
        f"{people}:7: frequency 'fortnightly': use daily or weekly DAY (mon..sun)",
        f"{people}:8: status 'vip': use one of pending, active, unsubscribed, bounced",
        f"{people}:9: topic '-survey': query only excludes words; add at least one word to "
        "look for",
        f"{people}:10: give at least one topic",
        f"{people}:11: name 'Ada\\u202eecalevol': one line of text, without control or "
        "direction characters",
        f"{people}:14: 6 cells, the header has 7",
        f"{people}:15: OK1@example.org is already on line 2",
        "added 3, updated 0, unchanged 0, bad rows 11",
        "Error: 11 bad rows were skipped",
    ]
    assert sorted(stored(db_url)) == ["multi@example.org", "ok1@example.org", "ok2@example.org"]
    assert stored(db_url)["multi@example.org"][6] == [(None, "graph"), (None, "speech")]


def test_a_row_with_several_bad_cells_is_one_line_naming_the_first(
    cli, tmp_path: Path, db_url
) -> None:
    """The web form lists every bad field; an import row stays one line, as before."""
    people = write(
        tmp_path,
        HEADER + "eve@example.org,graph;graph;-survey,Mars/Olympus,7,,Eve\u202e,\n"
        "bob@example.org,graph,Mars/Olympus,,,Bob\u202e,\n",
    )
    result = cli("subscribers", "import", str(people))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{people}:2: topics 'graph' and 'graph' are the same query 'graph': give it once",
        f"{people}:3: unknown timezone 'Mars/Olympus': use an IANA name such as Europe/Paris",
        "added 0, updated 0, unchanged 0, bad rows 2",
        "Error: 2 bad rows were skipped",
    ]
    assert stored(db_url) == {}


def test_an_hour_that_is_not_ascii_digits_is_a_bad_row(cli, tmp_path: Path, db_url) -> None:
    """ "²" and "٧" pass str.isdigit, and 5,000 digits exceed int()'s limit: each is one bad row."""
    people = write(
        tmp_path,
        "email,topics,hour\ngood@example.org,diffusion,7\nbad@example.org,diffusion,\u00b2\n"
        "arabic@example.org,diffusion,\u0667\nlong@example.org,diffusion," + "9" * 5000 + "\n",
    )
    result = cli("subscribers", "import", str(people))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{people}:3: hour must be between 0 and 23, got '\u00b2'",
        f"{people}:4: hour must be between 0 and 23, got '\u0667'",
        f"{people}:5: hour must be between 0 and 23, got '{'9' * 60}…'",
        "added 1, updated 0, unchanged 0, bad rows 3",
        "Error: 3 bad rows were skipped",
    ]
    assert list(stored(db_url)) == ["good@example.org"]
    assert stored(db_url)["good@example.org"][4] == 7


def test_a_like_topic_naming_no_paper_is_a_bad_row(cli, tmp_path: Path, db_url) -> None:
    """As `digest subscribe` and the web form refuse it: the import checks like:ID too."""
    people = write(
        tmp_path,
        "email,topics\ngood@example.org,diffusion\nlike@example.org,diffusion; like:99999\n",
    )
    result = cli("subscribers", "import", str(people))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == (
        f"{people}:3: topic 'like:99999': like:99999: no such paper (see `digest papers`)"
    )
    assert lines[1] == "added 1, updated 0, unchanged 0, bad rows 1"
    assert list(stored(db_url)) == ["good@example.org"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"email,topics\nada@example.org,\xff\xfe\n", "line 2: not UTF-8 text"),
        (b"email,topic\nada@example.org,x\n", "line 1: unknown column 'topic'"),
        (b"name,topics\nAda,x\n", "line 1: no email column"),
        (b"email,name\nada@example.org,Ada\n", "line 1: no topics column"),
        (b"email,Email,topics\na@b.org,a@b.org,x\n", "line 1: column 'email' appears twice"),
        (b"", "line 1: no email column"),
    ],
)
def test_a_file_that_cannot_be_imported_writes_nothing(
    cli, tmp_path: Path, db_url, content: bytes, message: str
) -> None:
    cli("subscribe", "ada@example.org", "--topic", "graph")
    people = tmp_path / "people.csv"
    people.write_bytes(content)
    result = cli("subscribers", "import", str(people))
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == f"Error: {people}: {message}" + (
        ""
        if "UTF-8" in message
        else "; the header names email, topics and any of: timezone, hour, frequency, name, status"
    )
    assert result.output.count("\n") == 1
    assert list(stored(db_url)) == ["ada@example.org"]
    missing = cli("subscribers", "import", str(tmp_path / "nope.csv"))
    assert missing.output == f"Error: {tmp_path / 'nope.csv'}: no such file\n"


def test_only_a_regular_file_within_the_limit_is_imported(
    cli, tmp_path: Path, db_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO used to hang forever and /dev/zero to end in a MemoryError: one line each."""
    cli("subscribe", "ada@example.org", "--topic", "graph")
    fifo = tmp_path / "people.fifo"
    os.mkfifo(fifo)
    big = write(tmp_path, HEADER + "bob@example.org,graph,,,,,\n" * 3, "big.csv")
    monkeypatch.setattr(subscribers_csv, "MAX_FILE_BYTES", 100)
    for path, message in (
        (fifo, "is a named pipe (FIFO), not a regular file"),
        (Path("/dev/zero"), "is a device, not a regular file"),
        (big, "file is 130 bytes, over the 100 byte limit (the subscriber import limit)"),
    ):
        result = cli("subscribers", "import", str(path))
        assert (result.exit_code, result.output) == (1, f"Error: {path}: {message}\n")
    assert list(stored(db_url)) == ["ada@example.org"]


def test_an_import_never_resubscribes_but_may_unsubscribe(cli, tmp_path: Path, db_url) -> None:
    for address in ("gone@example.org", "kept@example.org", "stay@example.org"):
        cli("subscribe", address, "--topic", "graph")
    cli("unsubscribe", "gone@example.org")
    cli("unsubscribe", "kept@example.org")
    people = write(
        tmp_path,
        HEADER + "gone@example.org,graph,,,,,active\n"
        "kept@example.org,speech,,,,,\n"
        "stay@example.org,graph,,,,,unsubscribed\n",
    )
    result = cli("subscribers", "import", str(people))
    assert result.output.splitlines()[0] == (
        f"{people}:2: gone@example.org is unsubscribed: an import never resubscribes "
        "(the person can, or `digest subscribe`)"
    )
    assert "added 0, updated 2, unchanged 0, bad rows 1" in result.output
    assert cli("subscribers", "import", str(people)).output.splitlines()[1] == (
        "added 0, updated 0, unchanged 2, bad rows 1"
    )
    rows = stored(db_url)
    assert (rows["gone@example.org"][2], rows["gone@example.org"][6]) == (
        "unsubscribed",
        [(None, "graph")],
    )
    assert (rows["kept@example.org"][2], rows["kept@example.org"][6]) == (
        "unsubscribed",
        [(None, "speech")],
    )
    assert rows["stay@example.org"][2] == "unsubscribed"


def test_dry_run_checks_against_the_database_and_stores_nothing(
    cli, tmp_path: Path, db_url
) -> None:
    cli("subscribe", "old@example.org", "--topic", "graph")
    people = write(tmp_path, HEADER + "old@example.org,speech,,,,,\nnew@example.org,x,,,,,\n")
    result = cli("subscribers", "import", str(people), "--dry-run")
    assert result.exit_code == 0
    assert result.output == "checked, nothing stored: added 1, updated 1, unchanged 0, bad rows 0\n"
    assert stored(db_url)["old@example.org"][6] == [(None, "graph")]
    assert list(stored(db_url)) == ["old@example.org"]


def failing_insert(factory, address: str) -> None:
    """Make the database refuse to store `address` (a trigger), like a full disk would."""
    statements = {
        "sqlite": [
            "CREATE TRIGGER refuse BEFORE INSERT ON subscribers "
            f"WHEN new.email_key = '{address}' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        ],
        "postgresql": [
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.email_key = '{address}' THEN RAISE EXCEPTION 'disk on fire'; END IF; "
            "RETURN NEW; END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON subscribers "
            "FOR EACH ROW EXECUTE FUNCTION refuse()",
        ],
    }
    with factory() as session, session.begin():
        for statement in statements[session.get_bind().dialect.name]:
            session.execute(text(statement))


def test_batches_before_a_database_failure_stay_imported(factory, tmp_path: Path) -> None:
    failing_insert(factory, "r4@example.org")
    people = write(tmp_path, HEADER + "".join(f"r{n}@example.org,x,,,,,\n" for n in range(7)))
    with pytest.raises(ImportInterrupted) as stopped:
        import_subscribers(
            factory, people, now=NOW, default_timezone="UTC", default_hour=7, batch_size=2
        )
    assert stopped.value.first_line == 6  # rows r4 and r5, lines 6 and 7
    assert "disk on fire" in str(stopped.value.__cause__)
    with factory() as session:
        keys = session.scalars(select(Subscriber.email_key).order_by(Subscriber.id)).all()
    assert keys == [f"r{n}@example.org" for n in range(4)]


def test_a_database_failure_is_one_line_saying_what_is_in(cli, factory, tmp_path: Path) -> None:
    failing_insert(factory, "r1@example.org")
    people = write(tmp_path, HEADER + "r0@example.org,x,,,,,\nr1@example.org,x,,,,,\n")
    result = cli("subscribers", "import", str(people))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {people}: stopped at line 2, whose batch was not ")
    assert "disk on fire" in result.output and result.output.count("\n") == 1
    assert result.output.endswith(
        "; the rows before it are imported, run the import again to finish\n"
    )


def test_export_to_a_file_by_status_and_listing_stays_the_default(cli, tmp_path: Path) -> None:
    cli("subscribe", "a@example.org", "--topic", "graph")
    cli("subscribe", "b@example.org", "--topic", "speech")
    cli("unsubscribe", "b@example.org")
    out = tmp_path / "active.csv"
    result = cli("subscribers", "export", "--status", "active", "--out", str(out))
    assert result.output == f"exported 1 subscribers to {out}\n"
    assert out.read_text(encoding="utf-8").splitlines() == [
        "email,topics,timezone,hour,frequency,name,status",
        "a@example.org,graph,UTC,7,daily,,active",
    ]
    listing = cli("subscribers", "--status", "unsubscribed").output.splitlines()
    assert [line.split()[0] for line in listing] == ["email", "b@example.org"]
    misplaced = cli("subscribers", "--status", "active", "export")
    assert misplaced.exit_code == 2
    assert "--status goes after the subcommand it is for" in misplaced.output


def test_export_refuses_to_replace_anything_but_a_regular_file(cli, tmp_path: Path) -> None:
    """It writes a temporary file renamed over the target: /dev/full, a link or a FIFO would
    have become a plain file (and /dev/full reported success)."""
    cli("subscribe", "ada@example.org", "--topic", "graph")
    kept = write(tmp_path, "kept\n", "kept.csv")
    link = tmp_path / "link.csv"
    link.symlink_to(kept)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    # /dev/full is checked in test_files (without a command that could replace it).
    for path, kind in ((link, "a symbolic link"), (fifo, "a named pipe (FIFO)")):
        result = cli("subscribers", "export", "--out", str(path))
        assert (result.exit_code, result.output) == (
            1,
            f"Error: {path} is {kind}: write to a regular file or a new path instead\n",
        )
        assert not path.with_name(f".{path.name}.partial").exists()
    assert link.is_symlink() and fifo.is_fifo()
    preview = cli("preview", "--topic", "graph", "--out", str(fifo))
    assert (preview.exit_code, preview.output) == (
        1,
        f"Error: {fifo} is a named pipe (FIFO): write to a regular file or a new path instead\n",
    )
    assert kept.read_text(encoding="utf-8") == "kept\n"
    assert cli("subscribers", "export", "--out", str(kept)).exit_code == 0
    assert kept.read_text(encoding="utf-8").splitlines()[1].startswith("ada@example.org,graph")


def test_cells_a_spreadsheet_would_run_are_exported_behind_a_quote(
    cli, tmp_path: Path, db_url
) -> None:
    people = write(
        tmp_path,
        "email,topics,name\n"
        '-ada@example.org,+rlhf,=HYPERLINK("http://x")\n'
        "bob@example.org,graph,'@bob\n",
    )
    assert cli("subscribers", "import", str(people)).output.startswith("added 2,")
    rows = stored(db_url)
    assert (rows["-ada@example.org"][1], rows["-ada@example.org"][6]) == (
        '=HYPERLINK("http://x")',
        [("+rlhf", "rlhf")],
    )
    assert rows["bob@example.org"][1] == "@bob"
    exported = cli("subscribers", "export").output
    assert exported.splitlines()[1:] == [
        """'-ada@example.org,'+rlhf,UTC,7,daily,"'=HYPERLINK(""http://x"")",active""",
        "bob@example.org,graph,UTC,7,daily,'@bob,active",
    ]
    again = write(tmp_path, exported, "again.csv")
    assert cli("subscribers", "import", str(again)).output.startswith("added 0, updated 0,")
    assert stored(db_url) == rows


def test_an_import_adds_topics_now_and_keeps_when_the_others_were_added(
    cli, tmp_path: Path, db_url
) -> None:
    """A topic an import adds (or whose query it edits) is added at the import; the ones a
    subscriber follows already keep their time, relabelled or moved."""

    def imported(at: str, body: str) -> dict[str, list[tuple[str, str | None, datetime]]]:
        with freeze_time(at):
            result = cli("subscribers", "import", str(write(tmp_path, HEADER + body)))
        assert result.exit_code == 0 and result.output.endswith("bad rows 0\n"), result.output
        engine = db.open_database(db_url)
        with db.session_factory(engine)() as session:
            found = {
                s.email: [(t.query, t.label, t.added_at) for t in s.topics]
                for s in db.list_subscribers(session)
            }
        engine.dispose()
        return found

    first = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    assert imported("2026-11-20 09:30", "ada@example.org,diffusion; robot,,,,,\n") == {
        "ada@example.org": [("diffusion", None, first), ("robot", None, first)]
    }
    assert imported(
        "2026-11-25 09:30",
        "ada@example.org,Bots=robot; speech; diffusion -survey,,,,,\nbob@example.org,robot,,,,,\n",
    ) == {
        "ada@example.org": [
            ("robot", "Bots", first),
            ("speech", None, NOW),
            ("diffusion -survey", None, NOW),
        ],
        "bob@example.org": [("robot", None, NOW)],
    }
