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
            "site.base_url: expected an http(s) URL",
        ),
        ("[smtp]\nstarttls = 'maybe'\n", {}, "smtp.starttls: expected true or false"),
        ("[smtp]\ntimeout = -1\n", {}, "smtp.timeout: must be greater than 0"),
        ("[ingest]\nretries = -2\n", {}, "ingest.retries: must not be negative"),
        ("[smtp]\nhots = 'typo'\n", {}, "unknown key 'smtp.hots'"),
        ("[smtp\nhost = 1\n", {}, "invalid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, body: str, env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(write(tmp_path, body), env)


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
