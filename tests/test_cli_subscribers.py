"""Subscriber and topic commands, with the clock pinned by freezegun."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import select, update

from digest import db
from digest.links import make_token, verify_token
from digest.models import Subscriber, Topic


def subscribers(db_url: str) -> list[Subscriber]:
    engine = db.open_database(db_url)
    with db.session_factory(engine)() as session:
        found = list(session.scalars(select(Subscriber).order_by(Subscriber.id)))
        for s in found:
            _ = s.topics
    engine.dispose()
    return found


@freeze_time("2026-11-25 09:30:00")
def test_subscribe_update_and_unsubscribe(cli, db_url: str) -> None:
    added = cli(
        "subscribe",
        "Ada.Lovelace@Example.ORG",
        "--topic",
        "Diffusion=Diffusion Models -survey",
        "--topic",
        "rlhf OR dpo",
        "--timezone",
        "Pacific/Auckland",
        "--hour",
        "6",
    )
    assert added.exit_code == 0, added.output
    assert added.output == (
        "subscribed Ada.Lovelace@example.org: daily at 06:00 Pacific/Auckland; "
        "topics: Diffusion; rlhf OR dpo\n"
    )
    [ada] = subscribers(db_url)
    assert (ada.email, ada.email_key, ada.status) == (
        "Ada.Lovelace@example.org",
        "ada.lovelace@example.org",
        "active",
    )
    assert ada.created_at == ada.confirmed_at == datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    assert [(t.query, t.label) for t in ada.topics] == [
        ("diffusion models -survey", "Diffusion"),
        ("rlhf OR dpo", None),
    ]
    assert len(ada.secret) >= 40
    # Re-subscribing updates the same subscriber (the address as last typed): new topics,
    # weekly, and the same timezone, hour and secret.
    again = cli("subscribe", "ada.lovelace@example.org", "--topic", "*", "--weekly", "fri")
    assert again.output == (
        "updated ada.lovelace@example.org: weekly (fri) at 06:00 Pacific/Auckland; topics: *\n"
    )
    [updated] = subscribers(db_url)
    assert (updated.id, updated.secret, updated.weekday) == (ada.id, ada.secret, 4)
    assert [t.query for t in updated.topics] == ["*"]
    back = cli("subscribe", "ada.lovelace@example.org", "--topic", "*", "--daily")
    assert "daily at 06:00" in back.output
    gone = cli("unsubscribe", "ADA.LOVELACE@example.org")
    assert gone.output == "unsubscribed ada.lovelace@example.org\n"
    assert subscribers(db_url)[0].status == "unsubscribed"
    table = cli("subscribers").output.splitlines()
    assert table[0].split() == ["email", "status", "frequency", "sends", "at", "topics"]
    assert table[1].split()[:3] == ["ada.lovelace@example.org", "unsubscribed", "daily"]
    assert cli("subscribers", "--status", "active").output.strip().endswith("(none)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-an-email", "--topic", "x"], "Error: invalid email address 'not-an-email'"),
        (["a@b", "--topic", "x"], "Error: invalid email address 'a@b'"),
        (["a@example.org\r\nBcc: x@evil.org", "--topic", "x"], "control characters"),
        (["a@example.org", "--topic", ""], "Error: topic '': query is empty"),
        (["a@example.org", "--topic", "-survey"], "query only excludes words"),
        (
            ["a@example.org", "--topic", "x", "--topic", "of the"],
            "Error: topic 'of the': query looks only for common words (of the)",
        ),
        (
            ["a@example.org", "--topic", "x", "--timezone", "Mars/Olympus"],
            "unknown timezone 'Mars/Olympus'",
        ),
        (["a@example.org", "--topic", "x", "--hour", "24"], "24 is not in the range 0<=x<=23"),
        (["a@example.org", "--topic", "x", "--weekly", "someday"], "unknown weekday 'someday'"),
        (["a@example.org", "--topic", "x", "--weekly", "mon", "--daily"], "exclude each other"),
        (["a@example.org"], "Missing option '--topic'"),
        (["a@example.org", "--topic", "x", "--name", "Ada\nBcc: x"], "Error: name 'Ada\\nBcc: x'"),
        (["a@example.org", "--topic", "x", "--name", "Ada\u202eecalevoL"], "direction characters"),
        (["a@example.org", "--topic", "x", "--name", "Ada\x85Lovelace"], "direction characters"),
        (["a@example.org", "--topic", "x", "--name", "A" * 101], "at most 100 characters, got 101"),
        (["a@example.org", "--topic", "RLHF\u2066=rlhf"], "without control or bidirectional"),
    ],
)
def test_subscribe_rejects_bad_input(cli, db_url: str, args: list[str], message: str) -> None:
    result = cli("subscribe", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert subscribers(db_url) == []


def test_unsubscribe_unknown_address(cli) -> None:
    result = cli("unsubscribe", "nobody@example.org")
    assert result.exit_code == 1
    assert result.output == "Error: no subscriber 'nobody@example.org'\n"


def test_topics_and_match_on_the_seed_data(cli, seeds: Path) -> None:
    cli("ingest", str(seeds))
    cli("subscribe", "a@example.org", "--topic", "Diffusion", "--topic", "*")
    cli("subscribe", "b@example.org", "--topic", "diffusion")
    cli("subscribe", "c@example.org", "--topic", "diffusion")
    cli("unsubscribe", "c@example.org")
    topics = cli("topics").output.splitlines()
    assert topics[0].split() == ["topic", "subscribers", "papers"]
    assert topics[1].split() == ["diffusion", "2", "31"]
    assert topics[2].split() == ["*", "1", "540"]
    match = cli("match", "diffusion model", "--limit", "3")
    lines = match.output.splitlines()
    assert lines[0] == "query: diffusion model"
    # An acronym a seed abstract defines: "diffusion models (DMs)".
    assert lines[1] == "expanded: diffusion model → DM"
    assert lines[2].split() == ["id", "relevance", "votes", "matched", "title"]
    scores = [float(line.split()[1]) for line in lines[3:]]
    assert len(scores) == 3 and scores[0] == 1.0 and scores == sorted(scores, reverse=True)
    # The matched words, as the papers write them: the phrase when it occurs.
    assert all("Diffusion Models" in line for line in lines[3:])
    moe = cli("match", "moe", "--limit", "2").output.splitlines()
    assert moe[:2] == ["query: moe", "expanded: moe → mixture of experts"]
    bad = cli("match", "--", "-survey")
    assert bad.exit_code == 2
    assert "Invalid value for QUERY: query only excludes words" in bad.output


@freeze_time("2026-11-25 09:30:00")
def test_a_stop_word_topic_saved_before_the_rule_is_still_served(
    cli, db_url: str, seeds: Path
) -> None:
    """`digest subscribe` now refuses "of the"; a row that has it keeps working."""
    cli("ingest", str(seeds))
    cli("subscribe", "a@example.org", "--topic", "placeholder")
    engine = db.open_database(db_url)
    with db.transaction(db.session_factory(engine)) as session:
        session.execute(update(Topic).values(query="of the"))
    engine.dispose()
    topics = cli("topics")
    assert topics.exit_code == 0
    assert topics.output.splitlines()[1].split()[:2] == ["of", "the"]
    preview = cli("preview", "--email", "a@example.org", "--format", "text")
    assert preview.exit_code == 0, preview.output


def test_greeting_name_and_topics_as_typed(cli, db_url: str) -> None:
    added = cli(
        "subscribe",
        "ada@example.org",
        "--name",
        "  Ada Lovelace ",
        "--topic",
        "3D",
        "--topic",
        "Diffusion Models",
        "--topic",
        "cat:cs.CL",
        "--topic",
        "rlhf",
    )
    assert added.exit_code == 0, added.output
    assert added.output.endswith("topics: 3D; Diffusion Models; cat:cs.CL; rlhf\n")
    [ada] = subscribers(db_url)
    assert ada.name == "Ada Lovelace"
    # The query is stored in canonical form (one evaluation for "3D" and "3d"), the
    # subscriber's own spelling as the label the emails show.
    assert [(t.query, t.label) for t in ada.topics] == [
        ("3d", "3D"),
        ("diffusion models", "Diffusion Models"),
        ('cat:"cs cl"', "cat:cs.CL"),
        ("rlhf", None),
    ]
    # Re-subscribing without --name keeps it; --name '' removes it.
    cli("subscribe", "ada@example.org", "--topic", "3d")
    [kept] = subscribers(db_url)
    assert kept.name == "Ada Lovelace"
    assert [(t.query, t.label) for t in kept.topics] == [("3d", None)]
    cli("subscribe", "ada@example.org", "--topic", "3d", "--name", "")
    assert subscribers(db_url)[0].name is None


def test_a_topic_is_added_when_its_query_is_first_followed(cli, db_url: str) -> None:
    """Re-subscribing keeps when each query was added, whatever its label or place; a new
    query, or an edited one (another query), is added now; an equivalent spelling is the
    same query."""

    def added(at: str, *topics: str) -> list[tuple[str, datetime]]:
        with freeze_time(at):
            result = cli("subscribe", "ada@example.org", *(f"--topic={t}" for t in topics))
        assert result.exit_code == 0, result.output
        return [(t.query, t.added_at) for t in subscribers(db_url)[0].topics]

    first, second, third = (datetime(2026, 11, day, 9, 30, tzinfo=UTC) for day in (20, 22, 24))
    assert added("2026-11-20 09:30", "diffusion", "robot") == [
        ("diffusion", first),
        ("robot", first),
    ]
    assert added("2026-11-22 09:30", "Agents", "Robots=Robot", "Diffusion") == [
        ("agents", second),
        ("robot", first),
        ("diffusion", first),
    ]
    assert added("2026-11-24 09:30", "agents", "robot -survey") == [
        ("agents", second),
        ("robot -survey", third),
    ]


def test_rotate_secret_revokes_the_old_links(cli, db_url: str) -> None:
    cli("subscribe", "ada@example.org", "--topic", "x")
    engine = db.open_database(db_url)
    factory = db.session_factory(engine)
    with factory() as session:
        old = db.find_subscriber(session, "ada@example.org").secret
    token = make_token("site-key", old, "unsubscribe", 1)
    result = cli("rotate-secret", "ADA@example.org")
    assert result.exit_code == 0
    assert result.output == (
        "new link secret for ada@example.org: the links in earlier emails no longer work\n"
    )
    with factory() as session:
        new = db.find_subscriber(session, "ada@example.org").secret
    engine.dispose()
    assert new != old and len(new) == len(old)
    assert verify_token("site-key", new, "unsubscribe", token) is None
    assert verify_token("site-key", old, "unsubscribe", token) == 1
