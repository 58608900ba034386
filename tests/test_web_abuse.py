"""The web front as an attacker and a careless user hit it (Flask's test client on a real
database, as tests/test_web.py): odd numbers in query strings, ids beyond the id columns,
errors whose log lines must not carry a subscriber's link."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text

from digest.models import Paper
from digest.web import PAGE_SIZE
from tests import test_web as web_tests
from tests.smtp_server import SmtpServer
from tests.test_web import (
    NOW,
    Site,
    active_subscriber,
    csrf_token,
    link_in,
    make_site,
    subscribe_form,
    token_links,
)

site = web_tests.site  # the same fixture: a fresh site on the seeds per test


@pytest.mark.parametrize("number", ["²", "①", "1²", "٣", "1" * 5000, "-1", "0", "9" * 30])
def test_a_page_number_that_is_not_a_page_is_the_first_page(site: Site, number: str) -> None:
    """`str.isdigit` lets "²" and "①" through to `int()`, which refuses them, and a
    5,000-digit number is past `int()`'s limit: each was a 500 from an anonymous GET."""
    client = site.client()
    first = client.get("/preview?topic=diffusion").get_data(as_text=True)
    response = client.get("/preview", query_string={"topic": "diffusion", "page": number})
    assert response.status_code == 200
    assert response.get_data(as_text=True) == first


def test_a_like_id_beyond_the_id_columns_names_no_paper(site: Site) -> None:
    """like:2147483648 fits the query syntax (12 digits) but not PostgreSQL's integer
    column: it is no such paper, never a database error."""
    client = site.client()
    for number in (2**31, 10**12 - 1):
        body = client.get(f"/api/match?q=like:{number}").get_json()
        assert body["count"] == 0
        assert body["error"].startswith(f"like:{number}: no such paper here.")
        page = client.get(f"/preview?topic=like:{number}")
        assert page.status_code == 400
        assert f"like:{number}: no such paper here." in page.get_data(as_text=True)


def test_an_unexpected_error_is_logged_without_the_link_token(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure on a token's page is logged by its route, not its path: a manage token
    in a log file would let whoever reads the logs change or end the subscription."""
    ada = active_subscriber(site)
    paths = token_links(site, ada)
    with site.wiring.engine().begin() as connection:
        connection.execute(text("ALTER TABLE subscribers RENAME TO subscribers_gone"))
    client = site.client()
    try:
        with caplog.at_level(logging.ERROR, logger="digest.web"):
            for path in (
                paths.manage,
                paths.unsubscribe,
                paths.unsubscribe.replace("unsubscribe", "u"),
            ):
                response = client.get(path)
                assert response.status_code == 500
                page = response.get_data(as_text=True)
                assert "Something went wrong" in page and "SELECT" not in page
    finally:
        with site.wiring.engine().begin() as connection:
            connection.execute(text("ALTER TABLE subscribers_gone RENAME TO subscribers"))
    logged = [record.getMessage() for record in caplog.records]
    assert logged == [
        "unexpected error on GET /manage/<token>",
        "unexpected error on GET /unsubscribe/<token>",
        "unexpected error on GET /u/<token>",
    ]
    for path in (paths.manage, paths.unsubscribe):
        assert path.rsplit("/", 1)[1] not in caplog.text


def test_an_address_that_never_answers_gets_ever_fewer_emails(site: Site) -> None:
    """Someone submits a victim's address every hour: at one email per `resend_minutes`
    the victim got 24 confirmation emails a day for as long as it went on. Each email
    left unanswered now doubles the wait before the next (1 h, 2 h, 4 h, ...), and a
    confirmation starts over."""
    sent_at = []
    for hour in range(25):
        site.clock.now = NOW + timedelta(hours=hour)
        client = site.client()
        response = client.post("/", data=subscribe_form(client, "victim@example.org", "gan"))
        assert response.status_code == 200
        if len(site.mail()) > len(sent_at):
            sent_at.append(hour)
    assert sent_at == [0, 1, 2, 4, 8, 16]
    # The owner confirms the last one: the next ask is an ordinary resend_minutes later.
    client = site.client()
    confirm_path = link_in(site.mail()[-1], "confirm")
    assert client.post(confirm_path, data={"csrf_token": csrf_token(client)}).status_code == 200
    site.clock.now = NOW + timedelta(hours=25)
    client = site.client()
    client.post("/", data=subscribe_form(client, "victim@example.org", "gan"))
    assert [m["Subject"] for m in site.mail()[6:]] == ["You already receive papers digest"]
    # An active address's "already subscribed" emails back off alike, and a month after
    # the first of them the run starts over.
    active_subscriber(site, "active@example.org")
    for at in (0, 1, 2, 3, 31 * 24, 31 * 24 + 1):
        site.clock.now = NOW + timedelta(hours=at)
        client = site.client()
        client.post("/", data=subscribe_form(client, "active@example.org", "gan"))
        site.mail()  # each email is sent before the next ask
    to_active = [m["Date"].datetime - NOW for m in site.mail() if m["To"] == "active@example.org"]
    assert to_active == [timedelta(hours=h) for h in (0, 1, 2, 31 * 24, 31 * 24 + 1)]


def test_a_subscriber_who_uses_the_manage_link_starts_a_new_run(site: Site) -> None:
    """An active subscriber asks again from the form and gets "already subscribed" emails,
    which back off (0 h, 1 h, 2 h, then a 2 h wait); saving from the emailed manage link
    answers them, so the next ask waits `resend_minutes` again, as after a confirmation."""
    ada = active_subscriber(site, "ada@example.org")
    for hour in (0, 1, 2):
        site.clock.now = NOW + timedelta(hours=hour)
        client = site.client()
        client.post("/", data=subscribe_form(client, "ada@example.org", "gan"))
        site.mail()
    site.clock.now = NOW + timedelta(hours=2, minutes=30)
    client = site.client()
    path = token_links(site, ada).manage
    form = subscribe_form(client, "ada@example.org", "robot")
    form.update(csrf_token=csrf_token(client, path), action="save")
    assert client.post(path, data=form).status_code == 303
    site.clock.now = NOW + timedelta(hours=3)
    client = site.client()
    client.post("/", data=subscribe_form(client, "ada@example.org", "gan"))
    sent = [m["Date"].datetime - NOW for m in site.mail() if m["To"] == "ada@example.org"]
    assert sent == [timedelta(hours=h) for h in (0, 1, 2, 3)]


def emails_at(site: Site, address: str, hours: list[int]) -> list[int]:
    """Submit the form for `address` at each of these hours after NOW: the hours whose
    submission sent an email."""
    sent_at = []
    for hour in hours:
        site.clock.now = NOW + timedelta(hours=hour)
        client = site.client()
        response = client.post("/", data=subscribe_form(client, address, "gan"))
        assert response.status_code == 200
        if len(site.mail()) > len(sent_at):
            sent_at.append(hour)
    return sent_at


def test_the_wait_keeps_growing_after_the_pending_address_would_have_been_purged(
    site: Site,
) -> None:
    """A pending address nobody confirms was deleted `pending_days` (7) after its last
    email, and with it the record of its unanswered emails: from the tenth email on (a
    wait over 7 days) the next submission started a new run, 1 h, 2 h, ... again, not
    "a month after the first". The address is kept while its run lasts."""
    doubling = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256]
    # 430 h: the 256 h email is over 7 days old; its wait (256 h) runs to 512 h.
    sent = emails_at(site, "victim@example.org", [*doubling, 430, 431, 512, 513, 31 * 24])
    assert sent == [*doubling, 512, 31 * 24]
    # The 31-day email began a new run, of one email so far: the next waits the plain
    # resend_minutes anyway, so the purge forgets the address 7 days on, as before.
    for day, kept in ((31 + 6, True), (31 + 8, False)):
        site.clock.now = NOW + timedelta(days=day)
        client = site.client()
        client.post("/", data=subscribe_form(client, "other@example.org", "gan"))
        assert (site.subscriber("victim@example.org") is not None) is kept


def test_an_email_that_did_not_go_out_starts_no_run_of_unanswered_emails(
    tmp_path: Path, seeds: Path, db_url: str, smtp_server: SmtpServer
) -> None:
    """The first confirmation of an address was refused by its mail server: it was never
    sent, so it is no email left unanswered. Kept as the start of the run, it made the
    wait after the next email as long as the time between the two (here three days)."""
    site = make_site(tmp_path, seeds, db_url, smtp_port=smtp_server.port)
    try:
        smtp_server.handler.rcpt_replies["eve@example.org"] = "550 5.1.1 Mailbox unavailable"
        client = site.client()
        client.post("/", data=subscribe_form(client, "eve@example.org", "gan"))
        assert site.app.extensions["digest.outbox"].drain()
        assert smtp_server.handler.parsed() == []
        del smtp_server.handler.rcpt_replies["eve@example.org"]
        for at in (timedelta(days=3), timedelta(days=3, hours=1)):
            site.clock.now = NOW + at
            client = site.client()
            client.post("/", data=subscribe_form(client, "eve@example.org", "gan"))
            assert site.app.extensions["digest.outbox"].drain()
        sent = [m["Date"].datetime - NOW for m in smtp_server.handler.parsed()]
        assert sent == [timedelta(days=3), timedelta(days=3, hours=1)]
    finally:
        site.app.extensions["digest.outbox"].drain()
        site.wiring.dispose()


def test_a_lookup_reads_the_papers_it_shows_not_every_match(site: Site) -> None:
    """`/api/match?q=*` (and the topic page the subscribe page links to for "*") counts
    every paper in the window: it read each one's matched words, one query per paper, so
    a lookup grew with the database (1.5 ms a paper: 15 s for a 10,000-paper week), for
    anyone to ask 120 times a minute. It now reads the few it shows."""
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = site.wiring.engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        body = site.client().get("/api/match?q=*").get_json()
        lookup = len(statements)
        statements.clear()
        page = site.client().get("/preview?topic=*")
        topic_page = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    with site.wiring.sessions()() as session:
        papers = session.scalar(select(func.count()).select_from(Paper))
    assert body["count"] == papers == 540 and len(body["examples"]) == 3
    assert page.status_code == 200
    # A few queries, plus one per paper on the page shown: not one per paper matched; the
    # lookup's three examples need only their ids (8 queries here; 11 reading their words).
    assert lookup < 10 and topic_page < 20 + PAGE_SIZE, (lookup, topic_page)
