"""Configuration: defaults, the TOML file, environment overrides and clear errors."""

from pathlib import Path

import pytest

from digest.config import KEYS, ConfigError, load_config

ROOT = Path(__file__).parent.parent


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_no_config_means_the_embedded_default(tmp_path: Path) -> None:
    config = load_config(None, {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")})
    data = tmp_path / "xdg" / "papers-digest"
    assert config.data_dir == data
    assert config.database_url == f"sqlite:///{data / 'digest.sqlite3'}"
    assert config.delivery.transport == "maildir"
    assert config.delivery.maildir == data / "outbox"
    assert config.is_embedded_database


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir = "/srv/digest"
[database]
url = "sqlite:////srv/digest/other.sqlite3"
[smtp]
host = "mail.example.org"
port = 465
ssl = true
password = "from-file"
[mail]
from_name = "Lab Digest"
""",
    )
    config = load_config(path, {"DIGEST_SMTP_PASSWORD": "from-env", "DIGEST_SMTP_PORT": "2525"})
    assert config.database_url == "sqlite:////srv/digest/other.sqlite3"
    assert config.delivery.transport == "smtp"
    assert (config.smtp.host, config.smtp.port, config.smtp.ssl) == ("mail.example.org", 2525, True)
    assert config.smtp.starttls is False
    assert config.smtp.password == "from-env"
    assert config.mail.from_name == "Lab Digest"
    assert config.delivery.maildir == Path("/srv/digest/outbox")
    env_db = load_config(path, {"DIGEST_DATABASE_URL": "postgresql://digest@db/digest"})
    assert env_db.database_url == "postgresql://digest@db/digest"
    assert not env_db.is_embedded_database


def test_a_postal_address_on_several_lines_is_one_footer_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[mail]\npostal_address = """Acme Inc\n  1 Main St\n\nSpringfield"""\n')
    assert load_config(path, {}).mail.postal_address == "Acme Inc, 1 Main St, Springfield"
    path = write(tmp_path, '[mail]\npostal_address = "Acme\\u202eInc"\n')
    with pytest.raises(ConfigError, match=r"mail\.postal_address: one line without control"):
        load_config(path, {})


def test_digest_config_environment_variable_picks_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[mail]\nfrom_address = "papers@example.org"\n')
    assert load_config(None, {"DIGEST_CONFIG": str(path)}).mail.from_address == "papers@example.org"


@pytest.mark.parametrize(
    ("body", "env", "message"),
    [
        ("[smtp]\nport = 'abc'\n", {}, "smtp.port: expected an integer, got 'abc'"),
        ("[smtp]\nport = 70000\n", {}, "smtp.port: not a TCP port: 70000"),
        ("", {"DIGEST_SMTP_PORT": "x"}, "smtp.port: expected an integer, got 'x'"),
        (
            "[delivery]\ntransport = 'pigeon'\n",
            {},
            "delivery.transport: unknown transport 'pigeon'",
        ),
        ("[delivery]\ntransport = 'smtp'\n", {}, "smtp.host: required when delivery.transport"),
        ("[database]\nurl = 'not a url'\n", {}, "database.url: not a database URL: 'not a url'"),
        ("[database]\nurl = 'mysql://x/y'\n", {}, "database.url: unsupported database 'mysql'"),
        (
            "[site]\nbase_url = 'javascript:alert(1)'\n",
            {},
            "site.base_url: expected an absolute http(s) URL",
        ),
        ("[smtp]\nstarttls = 'maybe'\n", {}, "smtp.starttls: expected true or false"),
        ("[smtp]\ntimeout = -1\n", {}, "smtp.timeout: must be greater than 0"),
        ("[ingest]\nretries = -2\n", {}, "ingest.retries: must not be negative"),
        ("[smtp]\nhots = 'typo'\n", {}, "unknown key 'smtp.hots'"),
        ("[smtp\nhost = 1\n", {}, "invalid TOML"),
        ("[smtp]\ntimeout = 1e400\n", {}, "smtp.timeout: expected a finite number, got inf"),
        ("[delivery]\nrate_limit = nan\n", {}, "delivery.rate_limit: expected a finite number"),
        ("[ingest]\ntimeout = 'inf'\n", {}, "ingest.timeout: expected a finite number, got inf"),
        ("[smtp]\ntimeout = 86400\n", {}, "smtp.timeout: must be at most 3600, got 86400.0"),
        ("[delivery]\nlease_seconds = 10000000\n", {}, "must be at most 86400, got 10000000"),
        ("", {"DIGEST_SMTP_PORT": "9" * 30}, f"smtp.port: {'9' * 30} is too large"),
        ("[digest]\nlookback_days = 100000\n", {}, "digest.lookback_days: must be at most 3660"),
        ("[schedule]\ngrace_hours = 1e9\n", {}, "schedule.grace_hours: must be at most 48"),
        ("", {"DIGEST_DATABASE_URL": "sqlite://"}, "an in-memory SQLite database ('sqlite://')"),
        ("", {"DIGEST_DATABASE_URL": "sqlite:///:memory:"}, "an in-memory SQLite database"),
        (
            "",
            {"DIGEST_DATABASE_URL": "sqlite:///file::memory:?cache=shared&uri=true"},
            "an in-memory SQLite database",
        ),
        (
            "",
            {"DIGEST_DATABASE_URL": "sqlite:///file:x?mode=memory&uri=true"},
            "an in-memory SQLite database",
        ),
        (
            "[smtp]\npassword = 98765432101\n",
            {},
            "smtp.password: expected a string in quotes (the value is secret: not shown)",
        ),
        ("[site]\nsecret_key = ['k']\n", {}, "site.secret_key: expected a string in quotes"),
        (
            "[mail]\nfrom_address = 'josé@exämple.org'\n",
            {},
            "mail.from_address: 'josé@exämple.org': use an address whose part before the @ is",
        ),
        ("[mail]\ndkim_key_file = '/k.pem'\n", {}, "set both to sign, or neither"),
        (
            "[mail]\ndkim_selector = 'a b'\ndkim_key_file = '/k.pem'\n",
            {},
            "mail.dkim_selector: not a DNS name such as 'digest': 'a b'",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, body: str, env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(write(tmp_path, body), env)


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    for body in ("[smtp]\npassword = 98765432101\n", "[site]\nsecret_key = 98765432101\n"):
        with pytest.raises(ConfigError) as error:
            load_config(write(tmp_path, body), {})
        assert "98765432101" not in str(error.value)
    url = "postgresql://digest:hunter2@db:notaport/digest"
    with pytest.raises(ConfigError) as error:
        load_config(None, {"DIGEST_DATABASE_URL": url})
    assert "hunter2" not in str(error.value) and "digest:***@db:notaport" in str(error.value)


def test_sender_addresses_are_kept_in_ascii(tmp_path: Path) -> None:
    path = write(
        tmp_path, "[mail]\nfrom_address = 'digest@exämple.org'\nreply_to = 'Team@exämple.org'\n"
    )
    config = load_config(path, {})
    assert config.mail.from_address == "digest@xn--exmple-cua.org"
    assert config.mail.reply_to == "Team@xn--exmple-cua.org"


def test_the_base_url_is_kept_in_ascii_without_its_trailing_slash(tmp_path: Path) -> None:
    """It goes into List-Unsubscribe headers: an IDN host in punycode, a path %-encoded."""
    path = write(tmp_path, "[site]\nbase_url = ' https://Dïgest.Exämple.org:8443/lab/café/ '\n")
    expected = "https://xn--dgest-cta.xn--exmple-cua.org:8443/lab/caf%C3%A9"
    assert load_config(path, {}).site.base_url == expected
    env = {"DIGEST_BASE_URL": "https://[2001:db8::1]/"}
    assert load_config(path, env).site.base_url == "https://[2001:db8::1]"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://a\r\nb.org", "the URL has a space or control character"),
        ("https://user:hunter2@example.org", "the URL carries a user name or password"),
        ("https://example.org/?utm=1", "the URL has a query or fragment"),
        ("https://☃.example", "host '☃.example' is not a valid international domain name"),
    ],
)
def test_a_base_url_from_the_environment_follows_the_same_rule(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, {"DIGEST_BASE_URL": url})
    assert str(error.value).startswith("site.base_url: expected an absolute http(s) URL, got ")
    assert str(error.value).endswith(f" ({why})")
    assert "hunter2" not in str(error.value)


def test_scheduled_url_sources_are_checked_as_ingest_fetches_them(tmp_path: Path) -> None:
    good = "https://export.arxiv.org/api/query?id_list=" + ",".join(["2602.23229"] * 300)
    path = write(tmp_path, f"[schedule]\nsources = ['{good}', 'feeds/', 'local file.json']\n")
    assert load_config(path, {}).schedule.sources == (good, "feeds/", "local file.json")
    for source, why in (
        (
            "https://me:hunter2@example.org/feed",
            "'https://me:***@example.org/feed': the URL carries",
        ),
        ("https://example.org:0/feed", "'https://example.org:0/feed': port 0 is not a TCP port"),
        ("http://[::1/feed", "'http://[::1/feed': not a valid URL"),
    ):
        path = write(tmp_path, f"[schedule]\nsources = ['feeds/', '{source}']\n")
        with pytest.raises(ConfigError) as error:
            load_config(path, {})
        assert str(error.value).startswith(f"schedule.sources: {why}")


@pytest.mark.parametrize(
    ("body", "env", "message"),
    [
        (
            'data_dir = "/srv/a\\r\\nb"\n',
            {"DIGEST_DATA_DIR": "/srv/digest"},
            "data_dir: one line without control or direction characters, got '/srv/a\\r\\nb'",
        ),
        (
            "[smtp]\nport = 'abc'\n",
            {"DIGEST_SMTP_PORT": "2525"},
            "smtp.port: expected an integer, got 'abc'",
        ),
        (
            "[site]\nbase_url = 'ftp://example.org'\n",
            {"DIGEST_BASE_URL": "https://example.org"},
            "site.base_url: expected an absolute http(s) URL, got 'ftp://example.org' "
            "(not an http or https URL)",
        ),
        (
            "[database]\nurl = 'mysql://x/y'\n",
            {"DIGEST_DATABASE_URL": "sqlite:////srv/d.sqlite3"},
            "database.url: unsupported database 'mysql' (sqlite or postgresql)",
        ),
    ],
)
def test_a_bad_file_value_is_refused_even_when_the_environment_overrides_it(
    tmp_path: Path, body: str, env: dict, message: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as error:
        load_config(path, env)
    [variable] = env
    assert str(error.value) == f"{message} (in {path}; {variable} overrides it)"
    good = load_config(None, env)  # the same environment with no file loads
    assert good.source is None


def test_the_environment_still_overrides_a_good_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "/srv/from-file"\n')
    assert load_config(path, {}).data_dir == Path("/srv/from-file")
    assert load_config(path, {"DIGEST_DATA_DIR": "/srv/from-env"}).data_dir == Path("/srv/from-env")
    with pytest.raises(ConfigError, match=r"^data_dir: one line without control"):
        load_config(path, {"DIGEST_DATA_DIR": "/srv/a\nb"})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml", {})


def test_the_example_config_documents_every_key_and_loads() -> None:
    example = ROOT / "config.example.toml"
    text = example.read_text(encoding="utf-8")
    for name in KEYS:
        assert f"{name.rsplit('.', 1)[-1]} =" in text, name
    config = load_config(example, {})
    assert config.ingest.host_delay == 3.0
