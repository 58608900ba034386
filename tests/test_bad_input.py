"""Every bad input from the issue, as a table: one clear line, no traceback, nothing changed.

Each case starts from a copy of one database (papers, three subscribers, a
day of deliveries), breaks something (the database file, the config, the
environment or the arguments), runs one `digest` command and checks:

* the exit status (1 for an error, 2 for a usage error);
* stderr holds exactly one `Error:` line saying what is wrong (Click adds its
  usage lines before a usage error) and no traceback, and no secret leaks;
* the database is unchanged: the row count of every table and SQLite's
  integrity check before and after; a damaged file is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest import db
from digest.app import database_error_message, safe_url
from digest.config import DeliveryConfig, DigestSettings, MailConfig
from digest.deliver import Sender, send_digests
from digest.ingest import ingest_inputs
from digest.message import DigestMailer
from digest.render import Renderer
from digest.subscribers import subscribe
from digest.transport import MemoryTransport
from tests.conftest import SEEDS

# The table breaks and compares the SQLite file itself (byte for byte, SQLite's
# integrity check, read-only and locked files): it runs on SQLite only.
pytestmark = pytest.mark.sqlite

SECRET = "hunter2secret"
GOOD_KEY = "bad-input-tests-signing-key-0123456789"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """34 papers, three subscribers (one with an internationalized address), a sent day."""
    path = tmp_path_factory.mktemp("bad-input") / "template.sqlite3"
    engine = db.open_database(f"sqlite:///{path}")
    factory = db.session_factory(engine)
    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)
    seed = SEEDS / "000_5ed1fa5957327774.txt"
    ingest_inputs(factory, [str(seed)], now=yesterday - timedelta(hours=1), max_bytes=10**7)
    with db.transaction(factory) as session:
        for address in ("ada@example.org", "bob@exämple.org", "josé@exämple.org"):
            subscribe(session, address, ["*"], now=yesterday - timedelta(days=1))
    mail = MailConfig("digest@papers.example.org", "Papers Digest", None, "")
    sender = Sender(
        factory=factory,
        transport=MemoryTransport(),
        mailer=DigestMailer(Renderer(), mail, "https://digest.example.org", GOOD_KEY),
        config=DeliveryConfig(),
        clock=lambda: yesterday,
    )
    day = yesterday.date()
    report = send_digests(
        sender,
        lambda session: [(s, day) for s in db.list_subscribers(session, "active")],
        now=yesterday,
        settings=DigestSettings(),
    )
    assert report.sent == 3
    engine.dispose()
    return path


def snapshot(path: Path, byte_for_byte: bool) -> object:
    """What must not change: every table's row count and the integrity check, or the bytes."""
    if byte_for_byte:
        wal = path.with_name(path.name + "-wal")
        return hashlib.sha256(path.read_bytes()).hexdigest(), wal.exists() and wal.stat().st_size
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        counts = {
            t: connection.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables
        }
        check = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    assert check == [("ok",)]
    assert counts["papers"] == 34 and counts["subscribers"] == 3 and counts["deliveries"] == 3
    return counts


def corrupt_the_middle(data: Path) -> None:
    """Random bytes over the middle third of the file's pages, like `dd ... conv=notrunc`."""
    path = data / "digest.sqlite3"
    pages = path.stat().st_size // 4096
    with path.open("r+b") as handle:
        handle.seek(4096 * (pages // 3))
        handle.write(random.Random(9).randbytes(4096 * (pages // 3)))


def garbage_file(data: Path) -> None:
    (data / "digest.sqlite3").write_bytes(b"this is not a database, just text " * 200)


def write_key_file(text: str) -> Callable[[Path], None]:
    def prepare(data: Path) -> None:
        (data / "secret_key").write_text(text, encoding="utf-8")

    return prepare


def data_dir_is_a_file(data: Path) -> None:
    (data.parent / "not-a-folder").write_text("x", encoding="utf-8")


def garbage_dkim_key(data: Path) -> None:
    (data.parent / "dkim.pem").write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n")


@dataclass
class Case:
    name: str
    args: tuple[str, ...]
    error: str  # the text the one Error line must hold
    exit_code: int = 1
    config: str = ""  # TOML for DIGEST_CONFIG
    env: dict[str, str] = field(default_factory=dict)  # {tmp} is the test's folder
    prepare: Callable[[Path], None] | None = None  # given the data directory
    byte_for_byte: bool = False
    secret: str | None = None  # must appear nowhere in the output
    key_in_env: bool = True  # a good DIGEST_SECRET_KEY, unless the case is about the key


CORRUPT_COMMANDS = [
    ("papers",),
    ("match", "diffusion"),
    ("subscribe", "eve@example.org", "--topic", "x"),
    ("unsubscribe", "ada@example.org"),
    ("send",),
    ("stats",),
    ("status",),
]
READ_ONLY_WRITES = [
    ("subscribe", "eve@example.org", "--topic", "x"),
    ("unsubscribe", "ada@example.org"),
    ("rotate-secret", "ada@example.org"),
    ("send",),
    ("ingest", str(SEEDS / "001_4e7a20fc27536b42.txt")),
]
READ_ONLY_URL = "sqlite:///file:{tmp}/data/digest.sqlite3?mode=ro&uri=true"
PG_NO_DRIVER = f"postgresql+pg8000://digest:{SECRET}@localhost/digest"

CASES = [
    *[
        Case(
            f"database damaged mid-file: {c[0]}",
            c,
            "is corrupt (",
            prepare=corrupt_the_middle,
            byte_for_byte=True,
        )
        for c in CORRUPT_COMMANDS
    ],
    Case(
        "database damaged mid-file: db status",
        ("db", "status"),
        "restore it from a backup",
        prepare=corrupt_the_middle,
        byte_for_byte=True,
    ),
    Case(
        "database damaged mid-file: db check",
        ("db", "check"),
        "restore it from a backup",
        prepare=corrupt_the_middle,
        byte_for_byte=True,
    ),
    Case(
        "not a database at all: send",
        ("send",),
        "is corrupt (file is not a database): restore it from a backup",
        prepare=garbage_file,
        byte_for_byte=True,
    ),
    *[
        Case(
            f"read-only database: {c[0]}",
            c,
            "is read-only (attempt to write a readonly database): check the permissions",
            env={"DIGEST_DATABASE_URL": READ_ONLY_URL},
        )
        for c in READ_ONLY_WRITES
    ],
    Case(
        "PostgreSQL without its driver",
        ("stats",),
        "the driver is not installed",
        env={"DIGEST_DATABASE_URL": PG_NO_DRIVER},
        secret=SECRET,
    ),
    Case(
        "a port that is not a number",
        ("stats",),
        "config: database.url: not a database URL: "
        "'postgresql://digest:***@localhost:notaport/digest'",
        env={"DIGEST_DATABASE_URL": f"postgresql://digest:{SECRET}@localhost:notaport/digest"},
        secret=SECRET,
    ),
    Case(
        "an in-memory database",
        ("subscribe", "eve@example.org", "--topic", "x"),
        "config: database.url: an in-memory SQLite database ('sqlite://') loses everything",
        env={"DIGEST_DATABASE_URL": "sqlite://"},
    ),
    Case(
        "a password that is a number",
        ("stats",),
        "config: smtp.password: expected a string in quotes (the value is secret: not shown)",
        config="[smtp]\npassword = 98765432101\n",
        secret="98765432101",
    ),
    Case(
        "a signing key that is a number",
        ("send",),
        "config: site.secret_key: expected a string in quotes (the value is secret: not shown)",
        config="[site]\nsecret_key = 12345678901234567890\n",
        secret="12345678901234567890",
        key_in_env=False,
    ),
    Case(
        "a configured signing key that is too short",
        ("send",),
        "site.secret_key: the signing key is shorter than 32 bytes; generate one with: python3",
        env={"DIGEST_SECRET_KEY": "k"},
        secret=None,
    ),
    Case(
        "an empty signing key file",
        ("preview", "--topic", "diffusion"),
        "secret_key: the signing key is shorter than 32 bytes; generate one with",
        prepare=write_key_file(""),
        key_in_env=False,
    ),
    Case(
        "a one-character signing key file",
        ("send",),
        "secret_key: the signing key is shorter than 32 bytes",
        prepare=write_key_file("x\n"),
        key_in_env=False,
    ),
    Case(
        "an infinite timeout",
        ("send",),
        "config: smtp.timeout: expected a finite number, got inf",
        config="[smtp]\ntimeout = 1e400\n",
    ),
    Case(
        "a rate limit that is not a number",
        ("send",),
        "config: delivery.rate_limit: expected a finite number, got nan",
        config="[delivery]\nrate_limit = nan\n",
    ),
    Case(
        "a gravity that overflows",
        ("send",),
        "config: digest.gravity: must be at most 10, got 1000000.0",
        config="[digest]\ngravity = 1e6\n",
    ),
    Case(
        "a retry count beyond reason",
        ("ingest", "https://example.org/feed"),
        "config: ingest.retries: 99999999999999999999 is too large",
        config="[ingest]\nretries = 99999999999999999999\n",
    ),
    Case(
        "localtime as the default timezone",
        ("send",),
        "config: digest.default_timezone: unknown IANA timezone 'localtime'",
        config="[digest]\ndefault_timezone = 'localtime'\n",
    ),
    *[
        Case(
            f"{zone} as a subscriber's timezone",
            ("subscribe", "eve@example.org", "--topic", "x", "--timezone", zone),
            f"unknown timezone '{zone}': use an IANA name such as Europe/Paris",
        )
        for zone in ("localtime", "Factory", "posixrules", "posix/Europe/Paris")
    ],
    Case(
        "a DKIM selector without a key file",
        ("send",),
        "config: mail.dkim_selector and mail.dkim_key_file: set both to sign, or neither",
        config="[mail]\ndkim_selector = 'digest'\n",
    ),
    Case(
        "a DKIM key file that is not a key",
        ("send",),
        "mail.dkim_key_file: {tmp}/dkim.pem is not a PEM RSA private key",
        config="[mail]\ndkim_selector = 'digest'\ndkim_key_file = '{tmp}/dkim.pem'\n",
        prepare=garbage_dkim_key,
        secret="AAAA",
    ),
    Case(
        "a sender address with a non-ASCII local part",
        ("send",),
        "config: mail.from_address: 'josé@exämple.org': use an address whose part before",
        config="[mail]\nfrom_address = 'josé@exämple.org'\n",
    ),
    Case(
        "title: with nothing after it, at subscribe",
        ("subscribe", "eve@example.org", "--topic", "title:"),
        "topic 'title:': 'title:' needs a word or \"phrase\" right after it",
    ),
    Case(
        "title: with nothing after it, at match",
        ("match", "agents title:"),
        "Invalid value for QUERY: 'title:' needs a word",
        exit_code=2,
    ),
    Case(
        "a right-to-left override in a topic label",
        ("subscribe", "eve@example.org", "--topic", "Diff\u202eusion=diffusion"),
        "without control or bidirectional-override characters",
    ),
    Case(
        "a quoted local part",
        ("subscribe", '"john doe"@example.org', "--topic", "x"),
        "invalid email address '\"john doe\"@example.org'",
    ),
    Case(
        "a domain literal",
        ("subscribe", "eve@[192.0.2.1]", "--topic", "x"),
        "invalid email address 'eve@[192.0.2.1]'",
    ),
    Case(
        "a display name",
        ("subscribe", "Eve <eve@example.org>", "--topic", "x"),
        "invalid email address 'Eve <eve@example.org>'",
    ),
    Case(
        "a special-use domain",
        ("subscribe", "eve@localhost", "--topic", "x"),
        "invalid email address 'eve@localhost'",
    ),
    Case(
        "an unknown address to rotate",
        ("rotate-secret", "nobody@example.org"),
        "no subscriber 'nobody@example.org'",
    ),
    Case(
        "an unknown address to preview",
        ("preview", "--email", "nobody@example.org"),
        "no subscriber 'nobody@example.org'",
    ),
    Case(
        "a digest date at the end of time",
        ("send", "--date", "9999-12-31"),
        "Invalid value for '--date': must be within a year of today",
        exit_code=2,
    ),
    *[
        Case(
            f"a 100 KB topic is echoed cut short: {command}",
            (command, *before, "--topic", "a" * 100_000),
            "topic '" + "a" * 60 + "…': query is longer than 500 characters",
        )
        for command, before in (("subscribe", ("eve@example.org",)), ("preview", ()))
    ],
    Case(
        "a 100 KB address is echoed cut short",
        ("subscribe", "e" * 100_000, "--topic", "x"),
        "invalid email address '" + "e" * 60 + "…': ",
    ),
    *[
        Case(
            f"a preview date at the start of time: {who[0]}",
            ("preview", *who, "--date", "0001-01-01"),
            "Invalid value for '--date': must be within a year of today",
            exit_code=2,
        )
        for who in (("--topic", "diffusion"), ("--email", "ada@example.org"))
    ],
    Case(
        "a 50,000-character port",
        ("stats",),
        "config: smtp.port: expected an integer, got '" + "9" * 60 + "…'",
        config='[smtp]\nport = "' + "9" * 50_000 + 'x"\n',
    ),
    Case(
        "a web host that is not a host",
        ("serve", "--host", "not a host", "--port", "18474"),
        "cannot listen on host 'not a host', port 18474: Invalid host/port specified.",
    ),
    *[
        Case(
            f"a site.base_url {what}",
            ("stats",),
            f"config: site.base_url: expected an absolute http(s) URL, got {url_shown} ({why})",
            config=f'[site]\nbase_url = "{url}"\n',
        )
        for what, url, url_shown, why in (
            (
                "with a header in it",
                "http://x\\r\\nX: y",
                "'http://x\\r\\nX: y'",
                "the URL has a space or control character",
            ),
            ("without a host", "https://", "'https://'", "the URL has no host"),
            (
                "with a space",
                "https://digest example.org",
                "'https://digest example.org'",
                "the URL has a space or control character",
            ),
            (
                "with a bad port",
                "https://digest.example.org:99999",
                "'https://digest.example.org:99999'",
                "not a valid URL",
            ),
            (
                "with port 0",
                "https://digest.example.org:0",
                "'https://digest.example.org:0'",
                "port 0 is not a TCP port",
            ),
            (
                "with a query",
                "https://digest.example.org/?a=1",
                "'https://digest.example.org/?a=1'",
                "the URL has a query or fragment",
            ),
            (
                "with a fragment",
                "https://digest.example.org/#top",
                "'https://digest.example.org/#top'",
                "the URL has a query or fragment",
            ),
            (
                "that is javascript:",
                "javascript:alert(1)",
                "'javascript:alert(1)'",
                "not an http or https URL",
            ),
            (
                "with a password in it",
                "https://admin:S3cret@digest.example.org",
                "'https://admin:***@digest.example.org'",
                "the URL carries a user name or password",
            ),
            (
                "with a password and a bad port",
                "https://admin:S3cret@digest.example.org:99999",
                "'https://admin:***@digest.example.org:99999'",
                "not a valid URL",
            ),
        )
    ],
    *[
        Case(
            f"a line break in {key}",
            ("stats",),
            f"config: {key}: one line without control or direction characters",
            config=f'[{key.split(".")[0]}]\n{key.split(".")[1]} = "a\\r\\nBcc: x@y.org"\n',
        )
        for key in ("mail.from_name", "site.name", "ingest.user_agent", "web.host")
    ],
    Case(
        "a templates folder that does not exist",
        ("stats",),
        "config: site.templates_dir: '/nonexistent' is not an existing folder",
        config='[site]\ntemplates_dir = "/nonexistent"\n',
    ),
    Case(
        "two topics with one query",
        ("subscribe", "eve@example.org", "--topic", "A=diffusion", "--topic", "B=diffusion"),
        "topics 'A=diffusion' and 'B=diffusion' are the same query 'diffusion': give it once",
    ),
    *[
        Case(
            f"an empty topic label: {command}",
            (command, *before, "--topic", "=diffusion"),
            "topic '=diffusion': the label before '=' is empty",
        )
        for command, before in (("subscribe", ("eve@example.org",)), ("preview", ()))
    ],
    Case(
        "a like: topic naming no paper",
        ("subscribe", "eve@example.org", "--topic", "like:99999"),
        "topic 'like:99999': like:99999: no such paper (see `digest papers`)",
    ),
    Case(
        "several bad fields: the first is the one line (the web form shows them all)",
        (
            "subscribe",
            "eve@example.org",
            *("--topic", "diffusion", "--topic", "-survey", "--topic", "like:99999"),
            *("--timezone", "Mars/Olympus", "--name", "Eve\u202e"),
        ),
        "Error: topic '-survey': query only excludes words; add at least one word to look for",
    ),
    Case(
        "a data directory that cannot be created, with the database elsewhere",
        ("send",),
        "cannot create the data directory {tmp}/not-a-folder",
        env={
            "DIGEST_DATA_DIR": "{tmp}/not-a-folder",
            "DIGEST_DATABASE_URL": "sqlite:///{tmp}/data/digest.sqlite3",
        },
        prepare=data_dir_is_a_file,
    ),
]


def chattr(flag: str, path: Path) -> bool:
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    case: Case, cli, template: Path, tmp_path: Path, monkeypatch
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    database = data / "digest.sqlite3"
    shutil.copy(template, database)
    if case.key_in_env:
        monkeypatch.setenv("DIGEST_SECRET_KEY", GOOD_KEY)
    if case.prepare is not None:
        case.prepare(data)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    if case.config:
        config = tmp_path / "config.toml"
        config.write_text(case.config.format(tmp=tmp_path), encoding="utf-8")
        monkeypatch.setenv("DIGEST_CONFIG", str(config))
    before = snapshot(database, case.byte_for_byte)

    result = cli(*case.args)

    assert result.exit_code == case.exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert case.error.format(tmp=tmp_path) in errors[0], result.stderr
    assert len(errors[0]) < 300, errors[0][:300]  # a user's value is echoed cut short
    others = [line for line in result.stderr.splitlines() if not line.startswith("Error")]
    if case.exit_code == 1:
        assert others == [], result.stderr
    else:  # Click's usage lines before a usage error
        assert all(line.startswith(("Usage:", "Try ")) or not line for line in others), others
    if case.secret:
        assert case.secret not in result.output
    assert snapshot(database, case.byte_for_byte) == before


def test_an_immutable_database_file_is_read_only(cli, template: Path, tmp_path: Path) -> None:
    """`chattr +i` as in the issue (needs CAP_LINUX_IMMUTABLE; the mode=ro cases cover the rest)."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    database = data / "digest.sqlite3"
    shutil.copy(template, database)
    before = snapshot(database, byte_for_byte=True)
    if not chattr("+i", database):
        pytest.skip("chattr +i is not permitted here")
    try:
        result = cli("subscribe", "eve@example.org", "--topic", "x")
    finally:
        chattr("-i", database)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: database sqlite:///{database} is read-only (attempt to write a readonly "
        "database): check the permissions of the file and its folder\n"
    )
    assert snapshot(database, byte_for_byte=True)[0] == before[0]


def test_a_full_maildir_folder_stops_the_send_and_keeps_every_row_queued(
    cli, template: Path, tmp_path: Path, monkeypatch
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    shutil.copy(template, data / "digest.sqlite3")
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(
        f"[delivery]\nmaildir = '{blocker}/outbox'\n[digest]\nsend_empty = true\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("DIGEST_CONFIG", str(config))
    monkeypatch.setenv("DIGEST_SECRET_KEY", GOOD_KEY)
    result = cli("send")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot write the Maildir outbox {blocker}/outbox: ")
    assert result.stderr.count("\n") == 1
    connection = sqlite3.connect(data / "digest.sqlite3")
    rows = connection.execute(
        "SELECT status, attempts, count(*) FROM deliveries GROUP BY status, attempts"
    ).fetchall()
    connection.close()
    assert sorted(rows) == [("queued", 0, 3), ("sent", 1, 3)]


def test_a_locked_database_is_one_line_and_changes_nothing(
    cli, template: Path, tmp_path: Path, monkeypatch
) -> None:
    """Another process holds the write lock longer than the busy timeout (cut to 0.2 s)."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    database = data / "digest.sqlite3"
    shutil.copy(template, database)
    monkeypatch.setattr(db.engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    before = snapshot(database, byte_for_byte=False)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = cli("subscribe", "eve@example.org", "--topic", "x")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: database sqlite:///{database} is locked by another process "
        "(database is locked): try again\n"
    )
    assert snapshot(database, byte_for_byte=False) == before


def test_database_urls_are_printed_without_their_password() -> None:
    assert safe_url(f"postgresql://digest:{SECRET}@db:5432/digest") == (
        "postgresql://digest:***@db:5432/digest"
    )
    assert safe_url(f"postgresql://digest:{SECRET}@db:port/digest") == (
        "postgresql://digest:***@db:port/digest"
    )
    message = database_error_message(ValueError("boom"), f"postgresql://u:{SECRET}@h/d")
    assert message == "database postgresql://u:***@h/d: boom"
