"""`digest preview`: what a subscriber or ad hoc topics would get, with no side effects."""

from email import message_from_bytes, policy
from pathlib import Path

from freezegun import freeze_time
from sqlalchemy import func, select

from digest import db
from digest.models import Delivery, Digest


def count_rows(db_url: str) -> tuple[int, int]:
    engine = db.open_database(db_url)
    with db.session_factory(engine)() as session:
        counts = (
            session.scalar(select(func.count()).select_from(Delivery)),
            session.scalar(select(func.count()).select_from(Digest)),
        )
    engine.dispose()
    return counts


@freeze_time("2026-11-25 07:00:00")
def test_ad_hoc_topic_preview_in_every_format(cli, seeds: Path, tmp_path: Path) -> None:
    cli("ingest", str(seeds))
    html_out = tmp_path / "p.html"
    result = cli("preview", "--topic", "diffusion", "--out", str(html_out))
    assert result.exit_code == 0, result.output
    subject, path = result.output.splitlines()
    assert subject == "Daily Papers · Wed 25 Nov · 10 new in diffusion"
    assert path == str(html_out)
    assert html_out.read_text(encoding="utf-8").count('class="title"') == 10
    text = cli("preview", "--topic", "diffusion", "--format", "text")
    default_path = Path(text.output.splitlines()[1])
    assert default_path == tmp_path / "data" / "previews" / "preview-diffusion.txt"
    assert default_path.read_text(encoding="utf-8").count("\n* ") == 10
    eml = tmp_path / "p.eml"
    cli("preview", "--topic", "diffusion", "--format", "eml", "--out", str(eml))
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["Subject"] == subject
    assert message.get_content_type() == "multipart/alternative"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_body(("plain",)).get_content().count("\n* ") == 10


@freeze_time("2026-11-25 07:00:00")
def test_subscriber_preview_has_no_side_effects(
    cli, seeds: Path, tmp_path: Path, db_url: str
) -> None:
    cli("ingest", str(seeds))
    cli("subscribe", "ada@example.org", "--name", "Ada", "--topic", "diffusion", "--topic", "*")
    out = tmp_path / "ada.eml"
    first = cli("preview", "--email", "ADA@example.org", "--format", "eml", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0] == (
        "Daily Papers · Wed 25 Nov · 20 new in diffusion, top papers"
    )
    message = message_from_bytes(out.read_bytes(), policy=policy.default)
    assert message["To"] == "ada@example.org"
    plain = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "\n\nHello Ada,\n\n== diffusion ==\n" in plain
    assert ">Hello Ada,</p>" in message.get_body(("html",)).get_content()
    assert "ada@example.org follows diffusion, Today's top papers" in " ".join(plain.split())
    assert count_rows(db_url) == (0, 0)
    again = cli("preview", "--email", "ada@example.org", "--format", "eml", "--out", str(out))
    assert again.output == first.output  # nothing was recorded, so nothing changed


def test_a_subscriber_preview_shows_the_next_digest_they_would_receive(
    cli, seeds: Path, tmp_path: Path
) -> None:
    out = tmp_path / "p.txt"

    def preview(*args: str) -> list[str]:
        result = cli("preview", *args, "--format", "text", "--out", str(out))
        assert result.exit_code == 0, result.output
        return [line for line in result.output.splitlines() if line != str(out)]

    with freeze_time("2026-11-25 07:00:00"):  # Wednesday
        cli("ingest", str(seeds))
        cli("subscribe", "ada@example.org", "--topic", "diffusion")  # daily at 07:00 UTC
        cli("subscribe", "bob@example.org", "--topic", "quantum chromodynamics")
        cli("subscribe", "cy@example.org", "--topic", "diffusion", "--weekly", "fri")
        # Due now, not sent yet: today's, chosen as of its send time.
        assert preview("--email", "ada@example.org") == [
            "Daily Papers · Wed 25 Nov · 10 new in diffusion",
            "the digest of Wed 25 Nov 2026 (2026-11-25 07:00 UTC): "
            "not planned; chosen as of its send time",
        ]
        # A weekly subscriber on another day: their Friday digest, as if sent now.
        assert preview("--email", "cy@example.org") == [
            "Weekly Papers · Fri 27 Nov · 10 new in diffusion",
            "the digest of Fri 27 Nov 2026 (2026-11-27 07:00 UTC): "
            "the next one, as it would be if it were sent now",
        ]
        assert cli("send").output.startswith("sent 1, empty 1,")
    with freeze_time("2026-11-25 07:05:00"):
        cli("subscribe", "ada@example.org", "--topic", "*")
        cli("subscribe", "bob@example.org", "--topic", "diffusion")
        # Today's went out: the next is tomorrow's, with the new topic and nothing sent again.
        ada = preview("--email", "ada@example.org")
        assert ada[0].startswith("Daily Papers · Thu 26 Nov · ")
        assert "in diffusion" not in ada[0]
        assert ada[1] == (
            "the digest of Thu 26 Nov 2026 (2026-11-26 07:00 UTC): "
            "the next one, as it would be if it were sent now"
        )
        # Today's digest itself is history, shown as it was sent.
        assert preview("--email", "ada@example.org", "--date", "2026-11-25") == [
            "Daily Papers · Wed 25 Nov · 10 new in diffusion",
            "the digest of Wed 25 Nov 2026 (2026-11-25 07:00 UTC): "
            "sent; as it was sent (history, not a preview)",
        ]
        # Nothing matched Bob's old topic today: nothing went, and nothing is shown.
        bob = preview("--email", "bob@example.org", "--date", "2026-11-25")
        assert bob[1] == (
            "the digest of Wed 25 Nov 2026 (2026-11-25 07:00 UTC): "
            "nothing was sent (nothing matched)"
        )
        assert "\n* " not in out.read_text(encoding="utf-8")
        monday = cli("preview", "--email", "cy@example.org", "--date", "2026-11-30")
        assert monday.exit_code == 1
        assert monday.output == (
            "Error: cy@example.org gets no digest on Mon 30 Nov 2026: theirs is weekly (fri)\n"
        )


def test_preview_errors(cli, tmp_path: Path) -> None:
    neither = cli("preview")
    assert neither.exit_code == 2
    assert "give either --email or at least one --topic" in neither.output
    unknown = cli("preview", "--email", "nobody@example.org")
    assert unknown.exit_code == 1
    assert unknown.output == "Error: no subscriber 'nobody@example.org'\n"
    bad = cli("preview", "--topic", "-only")
    assert bad.exit_code == 1
    assert "Error: topic '-only': query only excludes words" in bad.output
    baddate = cli("preview", "--topic", "x", "--date", "25/11/2026")
    assert baddate.exit_code == 2


def test_signing_key_is_generated_once_privately(cli, tmp_path: Path) -> None:
    cli("preview", "--topic", "x", "--format", "eml", "--out", str(tmp_path / "a.eml"))
    key_file = tmp_path / "data" / "secret_key"
    key = key_file.read_text(encoding="utf-8")
    assert len(key) >= 40 and key_file.stat().st_mode & 0o777 == 0o600
    cli("preview", "--topic", "x", "--format", "eml", "--out", str(tmp_path / "b.eml"))
    assert key_file.read_text(encoding="utf-8") == key
    first = message_from_bytes((tmp_path / "a.eml").read_bytes(), policy=policy.default)
    second = message_from_bytes((tmp_path / "b.eml").read_bytes(), policy=policy.default)
    assert first["List-Unsubscribe"] == second["List-Unsubscribe"]  # same key, same link


def test_configured_dkim_key_signs_the_message(cli, tmp_path: Path, monkeypatch) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[mail]\nfrom_address = "digest@papers.example.org"\ndkim_selector = "d1"\n'
        f'dkim_key_file = "{pem}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("DIGEST_CONFIG", str(config))
    out = tmp_path / "signed.eml"
    assert cli("preview", "--topic", "x", "--format", "eml", "--out", str(out)).exit_code == 0
    message = message_from_bytes(out.read_bytes(), policy=policy.default)
    signature = message["DKIM-Signature"]
    assert "d=papers.example.org" in signature and "s=d1" in signature
    pem.unlink()
    missing = cli("preview", "--topic", "x", "--format", "eml", "--out", str(out))
    assert missing.exit_code == 1 and "Error: mail.dkim_key_file:" in missing.output
