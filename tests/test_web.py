"""The web front through Flask's test client, on a real SQLite file and a real Maildir outbox:
double opt-in, tokens, enumeration resistance, rate limits, CSRF, headers, one-click unsubscribe."""

from __future__ import annotations

import mailbox
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import lxml.html
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from digest import db, links
from digest.app import App
from digest.config import load_config
from digest.deliver import send_digests
from digest.links import insecure_base_url
from digest.models import Delivery, Paper, Subscriber, SubscriptionRequest
from digest.preferences import parse_preferences
from digest.schedule import due_subscribers
from digest.select import SelectionRun
from digest.subscribers import request_digest, request_subscription, subscribe
from digest.views import paper_title
from digest.web import create_app
from digest.web_forms import WEB_PAPER_HINT
from tests.smtp_server import SmtpServer

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
KEY = "test-site-key-that-is-long-enough-0123456789"
BASE = "https://digest.example.org"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Site:
    app: Flask
    wiring: App
    clock: Clock
    outbox: Path

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def mail(self) -> list[EmailMessage]:
        """Every message in the outbox, oldest first, once the background sends are done."""
        assert self.app.extensions["digest.outbox"].drain()
        if not self.outbox.exists():
            return []
        box = mailbox.Maildir(self.outbox, create=False)
        raw = sorted((msg.get_date(), bytes(msg)) for msg in box)
        return [message_from_bytes(data, policy=policy.default) for _, data in raw]  # type: ignore[misc]

    def subscriber(self, email: str) -> Subscriber | None:
        with self.wiring.sessions()() as session:
            subscriber = db.find_subscriber(session, email.casefold())
            if subscriber is not None:
                list(subscriber.topics)
            return subscriber

    def count(self) -> int:
        with self.wiring.sessions()() as session:
            return session.scalar(select(func.count()).select_from(Subscriber)) or 0


def make_site(
    tmp_path: Path, seeds: Path, database_url: str, smtp_port: int | None = None, **web: object
) -> Site:
    """The web front on a database with the seed papers; emails go to a Maildir outbox, or
    to the SMTP server on `smtp_port`."""
    env = {
        "DIGEST_DATA_DIR": str(tmp_path / "data"),
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_SECRET_KEY": KEY,
        "DIGEST_BASE_URL": BASE,
    }
    lines = []
    if smtp_port is not None:
        env.update(DIGEST_SMTP_HOST="127.0.0.1", DIGEST_SMTP_PORT=str(smtp_port))
        lines += ["[smtp]", "starttls = false"]
    config_file = tmp_path / "config.toml"
    lines += ["[web]"] + [f"{key} = {value!r}" for key, value in web.items()]
    config_file.write_text("\n".join(lines).replace("'", '"') + "\n", encoding="utf-8")
    config = load_config(config_file, env)
    clock = Clock(NOW)
    wiring = App.from_config(config, clock=clock)
    summaries = wiring.ingest([str(seeds)], NOW - timedelta(hours=2))
    assert all(summary.ok for summary in summaries)
    return Site(create_app(wiring=wiring), wiring, clock, config.delivery.maildir)


@pytest.fixture
def site(tmp_path: Path, seeds: Path, db_url: str) -> Iterator[Site]:
    # Generous limits: the rate limit test sets its own.
    site = make_site(tmp_path, seeds, db_url, subscribe_rate_limit="1000 per minute")
    yield site
    site.app.extensions["digest.outbox"].drain()
    site.wiring.dispose()


def csrf_token(client: FlaskClient, path: str = "/") -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def subscribe_form(client: FlaskClient, email: str, *topics: str, **fields: str) -> dict:
    return {
        "csrf_token": csrf_token(client),
        "email": email,
        "topic": list(topics),
        "timezone": "Europe/Paris",
        "hour": "6",
        "frequency": "daily",
        "weekday": "mon",
        **fields,
    }


def link_in(message: EmailMessage, path: str) -> str:
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"{re.escape(BASE)}/{path}/\S+", text)
    assert found, f"no /{path}/ link in:\n{text}"
    return found.group(0).removeprefix(BASE)


def confirm_via_email(site: Site, email: str, *topics: str) -> EmailMessage:
    client = site.client()
    response = client.post("/", data=subscribe_form(client, email, *topics))
    assert response.status_code == 200
    message = site.mail()[-1]
    path = link_in(message, "confirm")
    form = client.get(path)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.get_data(as_text=True))
    assert token
    assert client.post(path, data={"csrf_token": token.group(1)}).status_code == 200
    return message


def test_subscribe_confirm_is_double_opt_in(site: Site) -> None:
    client = site.client()
    page = client.get("/").get_data(as_text=True)
    assert 'name="email"' in page and 'name="topic"' in page and 'name="timezone"' in page
    form = subscribe_form(client, "Ada@Example.org", "diffusion model", "RLHF=rlhf OR dpo")
    response = client.post("/", data=form)
    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)

    pending = site.subscriber("ada@example.org")
    assert pending is not None and pending.status == "pending"
    assert [t.query for t in pending.topics] == ["diffusion model", "rlhf OR dpo"]
    assert (pending.timezone, pending.send_hour, pending.weekday) == ("Europe/Paris", 6, None)

    [message] = site.mail()
    assert message["To"] == "Ada@example.org"
    assert message["Subject"] == "Confirm your subscription to papers digest"
    assert (
        "Someone, hopefully you, asked papers digest to send a daily digest to this address, "
        "on: diffusion model; RLHF."
    ) in words(message)
    path = link_in(message, "confirm")

    # A pending subscriber is never sent a digest.
    report = send_digests(
        site.wiring.sender(),
        lambda session: due_subscribers(session, NOW.replace(hour=6), timedelta(hours=6)),
        now=NOW.replace(hour=6),
        settings=site.wiring.config.digest,
    )
    assert report.sent == 0

    # Opening the link (GET, as a mail scanner would) changes nothing; the button does.
    page = client.get(path)
    assert page.status_code == 200 and "Confirm subscription" in page.get_data(as_text=True)
    assert site.subscriber("ada@example.org").status == "pending"  # type: ignore[union-attr]
    token = csrf_token(client, path)
    done = client.post(path, data={"csrf_token": token})
    assert done.status_code == 200 and "You're subscribed" in done.get_data(as_text=True)
    active = site.subscriber("ada@example.org")
    assert active is not None and active.status == "active" and active.confirmed_at == NOW


def test_pages_name_the_digest_the_scheduler_sends_next(site: Site) -> None:
    # Thursday 26 November, 02:00 UTC: Ada subscribes for 02:00 UTC and confirms at once.
    site.clock.now = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    client = site.client()
    form = subscribe_form(client, "ada@example.org", "diffusion", timezone="UTC", hour="2")
    assert client.post("/", data=form).status_code == 200
    path = link_in(site.mail()[-1], "confirm")
    done = client.post(path, data={"csrf_token": csrf_token(client, path)})
    due = "shortly (it was due at 02:00 on Thursday 26 November (UTC))"
    assert f"the next one {due}." in done.get_data(as_text=True)
    ada = site.subscriber("ada@example.org")
    assert ada is not None
    manage = token_links(site, ada).manage
    page = client.get(manage).get_data(as_text=True)
    assert f"It goes out {due}; this is the digest it sends." in page
    # The dispatcher sends it a minute later; then the next one is Friday's.
    site.clock.now = datetime(2026, 11, 26, 2, 1, tzinfo=UTC)
    report = send_digests(
        site.wiring.sender(),
        lambda session: due_subscribers(session, site.clock.now, timedelta(hours=6)),
        now=site.clock.now,
        settings=site.wiring.config.digest,
        at_send_time=True,
    )
    assert report.sent == 1
    page = client.get(manage).get_data(as_text=True)
    assert (
        "It goes out at 02:00 on Friday 27 November (UTC); "
        "this is what it would hold if it were sent now." in page
    )
    again = client.get(path).get_data(as_text=True)  # the link, opened again
    assert "the next one at 02:00 on Friday 27 November (UTC)." in again


def test_the_form_answers_alike_whatever_the_address(site: Site) -> None:
    with db.transaction(site.wiring.sessions()) as session:
        subscribe(session, "active@example.org", ["diffusion"], now=NOW)
        gone, _ = subscribe(session, "gone@example.org", ["diffusion"], now=NOW)
        gone.status = "unsubscribed"

    def answer(email: str) -> tuple[int, bytes]:
        client = site.client()
        response = client.post("/", data=subscribe_form(client, email, "robotics"))
        body = re.sub(rb'name="csrf_token" value="[^"]+"', b"", response.get_data())
        return response.status_code, body

    new = answer("new@example.org")
    assert answer("active@example.org") == new
    assert answer("gone@example.org") == new
    assert answer("new@example.org") == new  # now pending
    # The active subscriber's topics were not touched by whoever typed the address...
    active = site.subscriber("active@example.org")
    assert active is not None and [t.query for t in active.topics] == ["diffusion"]
    # ...but its owner was told, with a link to manage the subscription.
    subjects = {m["To"]: m["Subject"] for m in site.mail()}
    assert subjects == {
        "new@example.org": "Confirm your subscription to papers digest",
        "active@example.org": "You already receive papers digest",
        "gone@example.org": "Confirm your subscription to papers digest",
    }


def test_at_most_one_email_per_address_per_resend_window(site: Site) -> None:
    for _ in range(2):
        client = site.client()
        assert (
            client.post("/", data=subscribe_form(client, "eve@example.org", "nlp")).status_code
            == 200
        )
    assert len(site.mail()) == 1
    site.clock.now = NOW + timedelta(minutes=61)
    client = site.client()
    assert (
        client.post("/", data=subscribe_form(client, "eve@example.org", "nlp")).status_code == 200
    )
    assert len(site.mail()) == 2


def form_errors(response: TestResponse) -> list[tuple[str, str, str]]:
    """The error summary of a form page as (field id, label, message), each checked to stand
    by its field too: the field is aria-invalid and described by an element with that message.
    No other field is marked invalid."""
    tree = lxml.html.fromstring(response.get_data(as_text=True))
    summary = [
        (item.xpath("a/@href")[0].removeprefix("#"), item.xpath("a")[0].text_content(), item)
        for item in tree.xpath("//div[@id='error-summary']//li")
    ]
    found = []
    for anchor, label, item in summary:
        message = item.text_content().removeprefix(f"{label}: ")
        [field] = tree.xpath(f"//*[@id='{anchor}']")
        assert field.get("aria-invalid") == "true", anchor
        described = [
            tree.get_element_by_id(i).text_content() for i in field.get("aria-describedby").split()
        ]
        assert message in described, (anchor, message, described)
        found.append((anchor, label, message))
    invalid = tree.xpath("//*[@aria-invalid='true']/@id")
    assert sorted(invalid) == sorted({anchor for anchor, _, _ in found})
    return found


def selected(response: TestResponse, select: str) -> list[str]:
    tree = lxml.html.fromstring(response.get_data(as_text=True))
    return tree.xpath(f"//select[@id='{select}']/option[@selected]/@value")


def input_values(response: TestResponse, name: str) -> list[str]:
    tree = lxml.html.fromstring(response.get_data(as_text=True))
    return [value for value in tree.xpath(f"//input[@name='{name}']/@value") if value]


SEVERAL_BAD_FIELDS = {
    "topic": ["diffusion", "-survey", "like:99999", "Diffusion", "robot"],
    "name": "Eve\u202e",
    "timezone": "Mars/Olympus",
    "hour": "25",
    "frequency": "weekly",
    "weekday": "xyz",
}
SEVERAL_BAD_FIELDS_ERRORS = [
    (
        "name",
        "Your name",
        "one line of text, without control or direction characters",
    ),
    (
        "topic-2",
        "Topic 2",
        "query only excludes words; add at least one word to look for",
    ),
    (
        "topic-3",
        "Topic 3",
        f"like:99999: no such paper {WEB_PAPER_HINT}",
    ),
    (
        "topic-4",
        "Topic 4",
        "topics 'diffusion' and 'Diffusion' are the same query 'diffusion': give it once",
    ),
    (
        "timezone",
        "Timezone",
        "unknown timezone 'Mars/Olympus': use an IANA name such as Europe/Paris",
    ),
    ("hour", "Send at", "hour must be between 0 and 23, got 25"),
    ("weekday", "How often", "unknown weekday 'xyz': use mon, tue, wed, thu, fri, sat or sun"),
]


def assert_kept(response: TestResponse) -> None:
    """Everything SEVERAL_BAD_FIELDS sent is in the form again, bad values included."""
    assert input_values(response, "topic") == SEVERAL_BAD_FIELDS["topic"]
    assert input_values(response, "name") == ["Eve\u202e"]
    assert selected(response, "timezone") == ["Mars/Olympus"]
    assert selected(response, "hour") == ["25"]
    assert selected(response, "weekday") == ["xyz"]
    tree = lxml.html.fromstring(response.get_data(as_text=True))
    assert tree.xpath("//input[@name='frequency'][@checked]/@value") == ["weekly"]


def test_a_subscribe_with_several_bad_fields_shows_every_error_at_once(site: Site) -> None:
    client = site.client()
    form = subscribe_form(client, "not-an-address", **SEVERAL_BAD_FIELDS)  # type: ignore[arg-type]
    response = client.post("/", data=form)
    assert response.status_code == 400
    assert form_errors(response) == [
        ("email", "Email address", "Enter a valid email address, like ada@example.org."),
        *SEVERAL_BAD_FIELDS_ERRORS,
    ]
    assert_kept(response)
    assert input_values(response, "email") == ["not-an-address"]
    assert site.count() == 0 and site.mail() == []


def test_a_manage_save_with_several_bad_fields_shows_every_error_and_saves_nothing(
    site: Site,
) -> None:
    ada = active_subscriber(site)
    path = token_links(site, ada).manage
    client = site.client()
    form = {"csrf_token": csrf_token(client, path), "action": "save", **SEVERAL_BAD_FIELDS}
    response = client.post(path, data=form)
    assert response.status_code == 400
    assert form_errors(response) == SEVERAL_BAD_FIELDS_ERRORS
    assert "Nothing was saved." in response.get_data(as_text=True)
    assert_kept(response)
    after = site.subscriber("ada@example.org")
    assert after is not None
    assert [(t.label, t.query) for t in after.topics] == [(None, "diffusion")]
    assert (after.timezone, after.send_hour, after.weekday, after.name, after.updated_at) == (
        "UTC",
        7,
        None,
        None,
        ada.updated_at,
    )


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (
            {"email": "ada@"},
            ("email", "Email address", "Enter a valid email address, like ada@example.org."),
        ),
        ({"topic": []}, ("topic-1", "Topics", "give at least one topic")),
        (
            {"topic": ["robot", "-survey"]},
            (
                "topic-2",
                "Topic 2",
                "query only excludes words; add at least one word to look for",
            ),
        ),
        (
            {"topic": ["robot", "x" * 101 + "=diffusion"]},
            (
                "topic-2",
                "Topic 2",
                "a label of at most 100 characters, "
                "without control or bidirectional-override characters",
            ),
        ),
        (
            {"timezone": "localtime"},
            (
                "timezone",
                "Timezone",
                "unknown timezone 'localtime': use an IANA name such as Europe/Paris",
            ),
        ),
        (
            {"frequency": "weekly", "weekday": "fun"},
            (
                "weekday",
                "How often",
                "unknown weekday 'fun': use mon, tue, wed, thu, fri, sat or sun",
            ),
        ),
        (
            {"name": "Ada\x07"},
            (
                "name",
                "Your name",
                "one line of text, without control or direction characters",
            ),
        ),
    ],
)
def test_one_bad_field_is_exactly_one_error(site: Site, fields: dict, error: tuple) -> None:
    client = site.client()
    form = {**subscribe_form(client, "new@example.org", "robot"), **fields}
    response = client.post("/", data=form)
    assert response.status_code == 400
    assert form_errors(response) == [error]
    assert site.count() == 0 and site.mail() == []


def test_form_errors_name_the_field_and_keep_the_input(site: Site) -> None:
    client = site.client()
    response = client.post(
        "/",
        data=subscribe_form(
            client, "not-an-address", "ok topic", "-only -exclusions", timezone="localtime"
        ),
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Enter a valid email address" in page
    assert "Topic 2</a>: query only excludes words" in page
    assert "unknown timezone &#39;localtime&#39;" in page
    assert 'value="ok topic"' in page
    assert [anchor for anchor, _, _ in form_errors(response)] == ["email", "topic-2", "timezone"]
    assert site.count() == 0 and site.mail() == []


@pytest.mark.parametrize("hour", ["\u00b2", "\u0667", "9" * 5000, "-1", "24"])
def test_an_hour_that_is_not_0_to_23_is_a_field_error(site: Site, hour: str) -> None:
    """ "²" passes str.isdigit but not int(): a 400 naming the hour field, never a 500."""
    ada = active_subscriber(site)
    client = site.client()
    response = client.post("/", data=subscribe_form(client, "new@example.org", "robot", hour=hour))
    assert response.status_code == 400
    [(field, _, message)] = form_errors(response)
    assert field == "hour" and message.startswith("hour must be between 0 and 23, got ")
    assert selected(response, "hour") == [hour[:8]]
    path = token_links(site, ada).manage
    form = subscribe_form(client, "ada@example.org", "robot", hour=hour)
    form.update(csrf_token=csrf_token(client, path), action="save")
    manage = client.post(path, data=form)
    assert manage.status_code == 400
    assert [field for field, _, _ in form_errors(manage)] == ["hour"]
    assert site.count() == 1 and site.subscriber("ada@example.org").send_hour == 7  # type: ignore[union-attr]


def test_a_like_topic_naming_no_paper_is_a_field_error(site: Site) -> None:
    """The same check as `digest subscribe`: like:99999 is refused on its topic's field,
    along with the other fields' errors (it needs the database, they do not)."""
    ada = active_subscriber(site)
    client = site.client()
    response = client.post(
        "/", data=subscribe_form(client, "new@example.org", "robot", "like:99999", hour="24")
    )
    assert response.status_code == 400
    assert [field for field, _, _ in form_errors(response)] == ["topic-2", "hour"]
    assert "like:99999: no such paper" in response.get_data(as_text=True)
    path = token_links(site, ada).manage
    form = subscribe_form(client, "ada@example.org", "like:99999")
    form.update(csrf_token=csrf_token(client, path), action="save")
    manage = client.post(path, data=form)
    assert manage.status_code == 400
    assert form_errors(manage) == [
        (
            "topic-1",
            "Topic 1",
            f"like:99999: no such paper {WEB_PAPER_HINT}",
        )
    ]
    assert site.count() == 1 and site.mail() == []
    assert [t.query for t in site.subscriber("ada@example.org").topics] == ["diffusion"]  # type: ignore[union-attr]


def test_a_stop_word_topic_is_a_field_error(site: Site) -> None:
    client = site.client()
    response = client.post("/", data=subscribe_form(client, "new@example.org", "robot", "the"))
    assert response.status_code == 400
    assert form_errors(response) == [
        (
            "topic-2",
            "Topic 2",
            "query looks only for common words (the) that nearly every paper has; "
            "add a word that names the topic",
        )
    ]
    # The live check of the field words it alike.
    assert client.get("/api/match?q=of+the").get_json()["error"] == (
        "query looks only for common words (of the) that nearly every paper has; "
        "add a word that names the topic"
    )
    assert site.count() == 0 and site.mail() == []


def test_hostile_input_is_escaped_or_refused(site: Site) -> None:
    client = site.client()
    attack = "<script>alert(1)</script>"
    response = client.post("/", data=subscribe_form(client, "x@example.org\r\nBcc: y@evil", attack))
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    huge = client.post("/", data={"email": "a@example.org", "topic": "x" * 100_000})
    assert huge.status_code == 413
    assert site.count() == 0


def test_csrf_is_required_on_forms(site: Site) -> None:
    client = site.client()
    form = subscribe_form(client, "mallory@example.org", "diffusion")
    form["csrf_token"] = "forged"
    response = client.post("/", data=form)
    assert response.status_code == 400 and "Form expired" in response.get_data(as_text=True)
    assert site.count() == 0


def test_subscribe_and_lookup_rate_limits(tmp_path: Path, seeds: Path, db_url: str) -> None:
    site = make_site(
        tmp_path, seeds, db_url, subscribe_rate_limit="2 per minute", api_rate_limit="3 per minute"
    )
    client = site.client()
    codes = [
        client.post("/", data=subscribe_form(client, f"r{n}@example.org", "gan")).status_code
        for n in range(3)
    ]
    assert codes == [200, 200, 429]
    lookups = [client.get("/api/match?q=gan").status_code for _ in range(4)]
    assert lookups == [200, 200, 200, 429]
    assert client.get("/api/match?q=gan").get_json() == {
        "error": "Please wait a little and try again."
    }
    # Another client IP is not limited by the first one's requests.
    other = client.get("/api/match?q=gan", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200
    site.app.extensions["digest.outbox"].drain()
    site.wiring.dispose()


def test_match_api_counts_and_examples(site: Site) -> None:
    client = site.client()
    body = client.get("/api/match?q=diffusion").get_json()
    with site.wiring.sessions()() as session:
        from digest import relevance
        from digest.query import parse_query
        from digest.select import SelectionRun

        _, found = relevance.search(session, parse_query("diffusion"))
        listing = SelectionRun(session, NOW, site.wiring.config.digest).topic_listing("diffusion")
        shown = [item.paper_id for item in listing.items[:3]]
        papers = db.papers_by_id(session, shown)
        examples = [paper_title(papers[paper_id]) for paper_id in shown]
    # Every seed is in the digest's window: the matches above the digest's cutoff count.
    cutoff = site.wiring.config.digest.min_relevance
    assert body["count"] == sum(1 for m in found if m.relevance >= cutoff) == 25 < len(found)
    assert body["examples"] == examples
    assert body["query"] == "diffusion" and body["error"] is None
    # A label before '=' is the topic's name, as the form stores it, not words to search.
    assert client.get("/api/match?q=Diffusion%3Ddiffusion").get_json() == body
    bad = client.get('/api/match?q=title:"').get_json()
    assert bad["count"] == 0 and bad["error"]


def test_security_headers_on_every_kind_of_response(site: Site) -> None:
    client = site.client()
    for path in ("/", "/api/match?q=gan", "/manage/not-a-token", "/static/site.css"):
        response = client.get(path)
        response.close()
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        policy_header = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy_header and "'unsafe-inline'" not in policy_header
        assert "frame-ancestors 'none'" in policy_header
    assert client.get("/").headers["Cache-Control"] == "no-store"
    page = client.get("/").get_data(as_text=True)
    assert "<script>" not in page and " style=" not in page  # nothing inline for the CSP to block


def active_subscriber(site: Site, email: str = "ada@example.org") -> Subscriber:
    with db.transaction(site.wiring.sessions()) as session:
        subscriber, _ = subscribe(session, email, ["diffusion"], now=NOW, timezone="UTC")
        list(subscriber.topics)
    return subscriber


def token_links(site: Site, subscriber: Subscriber) -> links.SubscriberLinks:
    found = links.subscriber_links(BASE, KEY, subscriber.id, subscriber.secret)
    return links.SubscriberLinks(
        unsubscribe=found.unsubscribe.removeprefix(BASE),
        manage=found.manage.removeprefix(BASE),
        view=found.view.removeprefix(BASE),
    )


def test_bad_tokens_get_the_same_friendly_404(site: Site) -> None:
    ada = active_subscriber(site)
    bob = active_subscriber(site, "bob@example.org")
    good = token_links(site, ada)
    client = site.client()
    assert client.get(good.manage).status_code == 200
    tampered = good.manage[:-2] + ("AA" if not good.manage.endswith("AA") else "BB")
    # Bob's id signed with Ada's secret: moving a token to another subscriber fails.
    moved = "/manage/" + links.make_token(KEY, ada.secret, "manage", bob.id)
    unknown = "/manage/" + links.make_token(KEY, ada.secret, "manage", 9999)
    wrong_purpose = "/manage/" + good.unsubscribe.rsplit("/", 1)[1]
    bodies = set()
    for path in (tampered, moved, unknown, wrong_purpose, "/manage/garbage", "/unsubscribe/x.y"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "This link is not valid any more" in response.get_data(as_text=True)
        bodies.add(re.sub(rb'value="[^"]+"', b"", response.get_data()))
    assert len(bodies) == 1


def test_confirmation_links_expire(site: Site) -> None:
    client = site.client()
    client.post("/", data=subscribe_form(client, "late@example.org", "diffusion"))
    path = link_in(site.mail()[0], "confirm")
    site.clock.now = NOW + timedelta(hours=47)
    assert client.get(path).status_code == 200
    site.clock.now = NOW + timedelta(hours=49)
    assert client.get(path).status_code == 410
    assert client.post(path, data={"csrf_token": csrf_token(client)}).status_code == 410
    assert site.subscriber("late@example.org").status == "pending"  # type: ignore[union-attr]


def test_rotating_a_secret_revokes_old_links(site: Site) -> None:
    ada = active_subscriber(site)
    old = token_links(site, ada)
    with db.transaction(site.wiring.sessions()) as session:
        stored = session.get(Subscriber, ada.id)
        assert stored is not None
        stored.secret = "a-brand-new-secret-for-ada-0123456789"
    assert site.client().get(old.manage).status_code == 404
    assert (
        site.client().post(old.unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code
        == 404
    )


def test_unsubscribe_get_asks_post_does_and_one_click_works(site: Site) -> None:
    ada = active_subscriber(site)
    paths = token_links(site, ada)
    client = site.client()
    page = client.get(paths.unsubscribe)
    assert page.status_code == 200 and "Unsubscribe?" in page.get_data(as_text=True)
    assert site.subscriber("ada@example.org").status == "active"  # type: ignore[union-attr]
    # A form POST without the CSRF token is refused.
    assert client.post(paths.unsubscribe, data={}).status_code == 400
    assert site.subscriber("ada@example.org").status == "active"  # type: ignore[union-attr]
    done = client.post(
        paths.unsubscribe, data={"csrf_token": csrf_token(client, paths.unsubscribe)}
    )
    assert done.status_code == 200 and "You're unsubscribed" in done.get_data(as_text=True)
    assert site.subscriber("ada@example.org").status == "unsubscribed"  # type: ignore[union-attr]

    # RFC 8058: a fresh client (no cookie, no CSRF token) POSTs the one-click body.
    bob = active_subscriber(site, "bob@example.org")
    one_click = token_links(site, bob).unsubscribe
    fresh = site.app.test_client(use_cookies=False)
    response = fresh.post(
        one_click,
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert site.subscriber("bob@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    # The older /u/ path of earlier emails works the same way.
    carol = active_subscriber(site, "carol@example.org")
    old_path = token_links(site, carol).unsubscribe.replace("/unsubscribe/", "/u/")
    assert fresh.post(old_path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert site.subscriber("carol@example.org").status == "unsubscribed"  # type: ignore[union-attr]


def test_manage_edits_preferences_and_previews(site: Site) -> None:
    ada = active_subscriber(site)
    path = token_links(site, ada).manage
    client = site.client()
    page = client.get(path).get_data(as_text=True)
    assert "ada@example.org receives the daily digest" in page
    assert 'value="diffusion"' in page and "Your next digest" in page
    token = csrf_token(client, path)
    bad = client.post(
        path,
        data={
            "csrf_token": token,
            "action": "save",
            "topic": ["-survey"],
            "timezone": "UTC",
            "hour": "7",
            "frequency": "daily",
        },
    )
    assert bad.status_code == 400 and "Nothing was saved" in bad.get_data(as_text=True)
    saved = client.post(
        path,
        data={
            "csrf_token": token,
            "action": "save",
            "topic": ["robot", "Agents=llm agents"],
            "timezone": "Asia/Tokyo",
            "hour": "21",
            "frequency": "weekly",
            "weekday": "fri",
            "name": "Ada",
        },
    )
    assert saved.status_code == 303 and saved.headers["Location"] == path
    assert "Saved." in client.get(path).get_data(as_text=True)
    after = site.subscriber("ada@example.org")
    assert after is not None
    assert [(t.label, t.query) for t in after.topics] == [(None, "robot"), ("Agents", "llm agents")]
    assert (after.timezone, after.send_hour, after.weekday, after.name) == (
        "Asia/Tokyo",
        21,
        4,
        "Ada",
    )
    # After unsubscribing, the page offers to come back.
    client.post(token_links(site, ada).unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert "Subscribe again" in client.get(path).get_data(as_text=True)
    client.post(path, data={"csrf_token": token, "action": "resubscribe"})
    assert site.subscriber("ada@example.org").status == "active"  # type: ignore[union-attr]


SAVED = "Saved. Your next digest follows these settings."


def test_saved_is_said_once_after_a_save_never_on_reload_or_a_bookmark(site: Site) -> None:
    ada = active_subscriber(site)
    bob = active_subscriber(site, "bob@example.org")
    path = token_links(site, ada).manage
    client = site.client()
    token = csrf_token(client, path)
    form = {"csrf_token": token, "action": "save", "topic": ["robot"], "timezone": "UTC"}
    form |= {"hour": "7", "frequency": "daily"}
    saved = client.post(path, data=form)
    assert (saved.status_code, saved.headers["Location"]) == (303, path)
    assert client.get(path).get_data(as_text=True).count(SAVED) == 1
    assert SAVED not in client.get(path).get_data(as_text=True)  # reloaded
    # An address from before, with the old ?saved=1 flag: nothing was saved.
    assert SAVED not in client.get(path + "?saved=1").get_data(as_text=True)
    # The mark names the subscriber saved: another's page in the same browser says nothing.
    client.post(path, data=form)
    assert SAVED not in client.get(token_links(site, bob).manage).get_data(as_text=True)
    # A failed save says "Nothing was saved", never "Saved.".
    bad = client.post(path, data={**form, "topic": ["-survey"]})
    assert bad.status_code == 400 and SAVED not in bad.get_data(as_text=True)
    # Subscribing again from the manage page is a save too.
    client.post(token_links(site, ada).unsubscribe, data={"List-Unsubscribe": "One-Click"})
    again = client.post(path, data={"csrf_token": token, "action": "resubscribe"})
    assert (again.status_code, again.headers["Location"]) == (303, path)
    page = client.get(path).get_data(as_text=True)
    assert page.count(SAVED) == 1 and "ada@example.org receives the daily digest" in page
    assert SAVED not in client.get(path).get_data(as_text=True)


def send_due_digests(site: Site) -> int:
    """Send the digests due at 07:30 on NOW's date, as the scheduler would; how many."""
    site.clock.now = NOW.replace(hour=7, minute=30)
    report = send_digests(
        site.wiring.sender(),
        lambda session: due_subscribers(session, site.clock.now, timedelta(hours=6)),
        now=site.clock.now,
        settings=site.wiring.config.digest,
    )
    return report.sent


def test_a_topic_added_on_the_manage_page_brings_its_recent_papers(site: Site) -> None:
    """After a digest went, Ada adds a topic: the next digest, as her page previews it,
    shows that topic's papers of the window (all first seen before that digest) and no
    other topic's, none of them sent already."""
    joined = NOW - timedelta(days=1)
    with db.transaction(site.wiring.sessions()) as session:
        ada, _ = subscribe(session, "ada@example.org", ["diffusion"], now=joined, timezone="UTC")
    assert send_due_digests(site) == 1
    with site.wiring.sessions()() as session:
        sent = {
            paper_title(item.paper)
            for item in session.scalars(select(Delivery)).one().digest.items  # type: ignore[union-attr]
        }
    path = token_links(site, ada).manage
    site.clock.now = NOW + timedelta(hours=2)
    client = site.client()
    form = {"csrf_token": csrf_token(client, path), "action": "save", "timezone": "UTC"}
    form |= {"hour": "7", "frequency": "daily", "topic": ["diffusion", "Bots=robot"]}
    assert client.post(path, data=form).status_code == 303
    stored = site.subscriber("ada@example.org")
    assert stored is not None
    assert [(t.query, t.added_at) for t in stored.topics] == [
        ("diffusion", joined),
        ("robot", NOW + timedelta(hours=2)),
    ]
    page = lxml.html.fromstring(client.get(path).get_data(as_text=True))
    preview = page.get_element_by_id("preview-title").getparent()
    sections = [h3.text_content() for h3 in preview.find_class("section-title")]
    titles = [h4.text_content() for h4 in preview.find_class("paper-title")]
    with site.wiring.sessions()() as session:
        listing = SelectionRun(session, site.clock.now, site.wiring.config.digest).topic_listing(
            "robot"
        )
        window = [paper_title(session.get(Paper, item.paper_id)) for item in listing.items]  # type: ignore[arg-type]
    assert sections == ["Bots"]
    # The seeds' three robot papers, seen before the digest (which sent ten on diffusion).
    assert titles == [title for title in window if title not in sent]
    assert (len(titles), len(sent)) == (3, 10)


def test_a_confirmed_request_adds_its_new_topics_when_it_is_confirmed(site: Site) -> None:
    with db.transaction(site.wiring.sessions()) as session:
        carol, _ = subscribe(
            session, "carol@example.org", ["diffusion"], now=NOW - timedelta(days=9)
        )
        carol.status = "unsubscribed"
    client = site.client()
    client.post("/", data=subscribe_form(client, "carol@example.org", "Diffusion", "robotics"))
    site.clock.now = NOW + timedelta(hours=3)
    assert confirm_link(site, link_in(site.mail()[-1], "confirm")) == 200
    stored = site.subscriber("carol@example.org")
    assert stored is not None
    assert [(t.query, t.label, t.added_at) for t in stored.topics] == [
        ("diffusion", "Diffusion", NOW - timedelta(days=9)),
        ("robotics", None, NOW + timedelta(hours=3)),
    ]


def test_web_copy_of_a_sent_digest_has_no_personal_data(site: Site) -> None:
    active_subscriber(site)
    assert send_due_digests(site) == 1
    [message] = site.mail()
    view = link_in(message, "digest")
    page = site.client().get(view)
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    with site.wiring.sessions()() as session:
        delivery = session.scalars(select(Delivery)).one()
        titles = [item.paper.title for item in delivery.digest.items]  # type: ignore[union-attr]
    assert all(title.replace("'", "&#39;").split("$")[0] in body for title in titles)
    assert "ada@example.org" not in body and "/manage/" not in body and "/unsubscribe/" not in body
    assert site.client().get(view[:-3] + "xyz").status_code == 404
    # The preferences page previews the next digest: nothing already sent shows again.
    manage = site.client().get(link_in(message, "manage")).get_data(as_text=True)
    assert "Your next digest" in manage
    assert not any(title.replace("'", "&#39;").split("$")[0] in manage for title in titles)
    # Older per-subscriber view links redirect to the shared copy.
    ada = site.subscriber("ada@example.org")
    assert ada is not None
    old = "/view/" + links.make_token(KEY, ada.secret, "view", [ada.id, "2026-11-25"])
    redirect = site.client().get(old)
    assert redirect.status_code == 301 and redirect.headers["Location"].endswith(view)


def test_preview_page_shows_an_ad_hoc_topic(site: Site) -> None:
    client = site.client()
    page = client.get("/preview?topic=diffusion")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "25 papers match “diffusion” in the last 7 days" in body
    assert body.count('class="paper"') == 25
    bad = client.get("/preview?topic=-survey")
    error = lxml.html.fromstring(bad.get_data(as_text=True)).xpath("//p[@class='error-text']")
    assert bad.status_code == 400 and [p.text_content() for p in error] == [
        "query only excludes words; add at least one word to look for"
    ]


def open_requests(site: Site) -> dict[str, int]:
    """How many subscription requests each address has waiting."""
    with site.wiring.sessions()() as session:
        rows = session.execute(
            select(Subscriber.email, func.count(SubscriptionRequest.id))
            .join(SubscriptionRequest, SubscriptionRequest.subscriber_id == Subscriber.id)
            .group_by(Subscriber.email)
        )
        return {email: count for email, count in rows}


def test_unconfirmed_requests_are_forgotten(site: Site) -> None:
    client = site.client()
    client.post("/", data=subscribe_form(client, "never@example.org", "gan"))
    former = active_subscriber(site, "former@example.org")
    with db.transaction(site.wiring.sessions()) as session:
        stored = session.get(Subscriber, former.id)
        assert stored is not None
        stored.status = "unsubscribed"
        # A request made before requests were kept apart left an address that had been a
        # subscriber pending: it goes back to unsubscribed (its history stays).
        legacy, _ = subscribe(session, "legacy@example.org", ["gan"], now=NOW)
        legacy.status = "pending"
    client.post("/", data=subscribe_form(client, "former@example.org", "gan"))
    assert site.subscriber("former@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    assert open_requests(site) == {"never@example.org": 1, "former@example.org": 1}
    site.clock.now = NOW + timedelta(days=8)
    client.post("/", data=subscribe_form(client, "someone@example.org", "gan"))
    assert site.subscriber("never@example.org") is None
    assert site.subscriber("former@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    assert site.subscriber("legacy@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    assert open_requests(site) == {"someone@example.org": 1}


# --- what a form submission may change ---------------------------------------------


def topics_of(site: Site, email: str) -> tuple[str, list[str]]:
    subscriber = site.subscriber(email)
    assert subscriber is not None
    return subscriber.status, [t.query for t in subscriber.topics]


def words(message: EmailMessage) -> str:
    """The plain-text part with its line wrapping undone."""
    return " ".join(message.get_body(("plain",)).get_content().split())


def confirm_link(site: Site, path: str) -> int:
    """Press the button of a confirmation page; the status code."""
    client = site.client()
    page = client.get(path)
    if page.status_code != 200:
        return page.status_code
    return client.post(path, data={"csrf_token": csrf_token(client, path)}).status_code


def test_a_second_request_for_a_pending_address_changes_nothing_until_its_own_email(
    site: Site,
) -> None:
    """The QA repro: a second form submission (another spelling of the address) used to
    replace Bob's pending topics; his email still listed the old ones, his link confirmed
    the new ones."""
    client = site.client()
    form = subscribe_form(client, "bob+papers@example.org", "large language model", "*")
    assert client.post("/", data=form).status_code == 200
    [first] = site.mail()
    assert "on: large language model; Today's top papers." in words(first)
    assert topics_of(site, "bob+papers@example.org") == (
        "pending",
        ["large language model", "*"],
    )
    # Within the resend window: no email, and nothing stored or changed.
    site.clock.now = NOW + timedelta(minutes=5)
    client = site.client()
    form = subscribe_form(client, "BOB+PAPERS@EXAMPLE.ORG", "robotics", hour="22")
    assert client.post("/", data=form).status_code == 200
    assert len(site.mail()) == 1
    assert open_requests(site) == {"bob+papers@example.org": 1}
    bob = site.subscriber("bob+papers@example.org")
    assert bob is not None and (bob.email, bob.send_hour) == ("bob+papers@example.org", 6)
    # Bob's link confirms what his email described.
    assert confirm_link(site, link_in(first, "confirm")) == 200
    assert topics_of(site, "bob+papers@example.org") == (
        "active",
        ["large language model", "*"],
    )


def test_a_newer_request_supersedes_an_older_one_once_its_email_went_out(site: Site) -> None:
    client = site.client()
    client.post("/", data=subscribe_form(client, "bob@example.org", "large language model"))
    site.clock.now = NOW + timedelta(minutes=61)
    client = site.client()
    client.post("/", data=subscribe_form(client, "bob@example.org", "robotics", hour="22"))
    first, second = site.mail()
    assert "on: large language model." in words(first)
    assert "on: robotics." in words(second)
    # Stored topics are still those of the first request until one is confirmed.
    assert topics_of(site, "bob@example.org") == ("pending", ["large language model"])
    assert open_requests(site) == {"bob@example.org": 1}
    old, new = link_in(first, "confirm"), link_in(second, "confirm")
    assert confirm_link(site, old) == 404
    page = site.client().get(new).get_data(as_text=True)
    assert "on: robotics." in page
    assert confirm_link(site, new) == 200
    bob = site.subscriber("bob@example.org")
    assert bob is not None
    assert (bob.status, [t.query for t in bob.topics], bob.send_hour) == (
        "active",
        ["robotics"],
        22,
    )
    # Opening the link again shows the subscription; nothing changes.
    again = site.client().get(new)
    assert again.status_code == 200 and "You're subscribed" in again.get_data(as_text=True)
    assert topics_of(site, "bob@example.org") == ("active", ["robotics"])


@pytest.mark.parametrize("status", ["unsubscribed", "bounced"])
def test_a_request_for_a_former_subscriber_waits_for_their_confirmation(
    site: Site, status: str
) -> None:
    former = active_subscriber(site, "carol@example.org")
    with db.transaction(site.wiring.sessions()) as session:
        stored = session.get(Subscriber, former.id)
        assert stored is not None
        stored.status = status
    client = site.client()
    client.post("/", data=subscribe_form(client, "Carol@Example.org", "robotics", hour="22"))
    # Nothing changed before she confirms: not her topics, schedule or state.
    carol = site.subscriber("carol@example.org")
    assert carol is not None
    assert (carol.status, [t.query for t in carol.topics], carol.send_hour, carol.timezone) == (
        status,
        ["diffusion"],
        7,
        "UTC",
    )
    [message] = site.mail()
    assert message["To"] == "carol@example.org"
    assert "on: robotics." in words(message)
    assert confirm_link(site, link_in(message, "confirm")) == 200
    carol = site.subscriber("carol@example.org")
    assert carol is not None
    assert (carol.status, [t.query for t in carol.topics], carol.send_hour, carol.timezone) == (
        "active",
        ["robotics"],
        22,
        "Europe/Paris",
    )


def test_a_request_link_never_changes_an_active_subscriber(site: Site) -> None:
    """Carol asked while unsubscribed, then came back on her manage page: the pending
    request's link must not rewrite the settings she has now."""
    former = active_subscriber(site, "carol@example.org")
    with db.transaction(site.wiring.sessions()) as session:
        stored = session.get(Subscriber, former.id)
        assert stored is not None
        stored.status = "unsubscribed"
    client = site.client()
    client.post("/", data=subscribe_form(client, "carol@example.org", "robotics"))
    [message] = site.mail()
    with db.transaction(site.wiring.sessions()) as session:
        stored = session.get(Subscriber, former.id)
        assert stored is not None
        stored.status = "active"
    client = site.client()
    path = link_in(message, "confirm")
    done = client.post(path, data={"csrf_token": csrf_token(client)})
    assert done.status_code == 200 and "You're subscribed" in done.get_data(as_text=True)
    assert topics_of(site, "carol@example.org") == ("active", ["diffusion"])


def test_a_request_whose_email_failed_leaves_the_older_link_working(
    tmp_path: Path, seeds: Path, db_url: str, smtp_server: SmtpServer
) -> None:
    site = make_site(
        tmp_path, seeds, db_url, smtp_port=smtp_server.port, subscribe_rate_limit="100/minute"
    )
    try:
        client = site.client()
        client.post("/", data=subscribe_form(client, "dan@example.org", "diffusion"))
        assert site.app.extensions["digest.outbox"].drain()
        [first] = smtp_server.handler.parsed()
        smtp_server.handler.rcpt_replies["dan@example.org"] = "550 5.1.1 Mailbox unavailable"
        site.clock.now = NOW + timedelta(minutes=61)
        client = site.client()
        client.post("/", data=subscribe_form(client, "dan@example.org", "robotics"))
        assert site.app.extensions["digest.outbox"].drain()
        assert len(smtp_server.handler.parsed()) == 1
        # The failed request is gone; the one Dan did receive still confirms.
        assert open_requests(site) == {"dan@example.org": 1}
        assert confirm_link(site, link_in(first, "confirm")) == 200
        assert topics_of(site, "dan@example.org") == ("active", ["diffusion"])
    finally:
        site.app.extensions["digest.outbox"].drain()
        site.wiring.dispose()


def test_a_confirmation_link_from_before_requests_still_confirms(site: Site) -> None:
    """Emails sent by the previous version carry [id, issued]: they confirm the pending
    subscriber's stored settings, as they did."""
    with db.transaction(site.wiring.sessions()) as session:
        old, _ = subscribe(session, "old@example.org", ["gan"], now=NOW)
        old.status = "pending"
        token = links.confirm_token(KEY, old.secret, old.id, NOW)
    assert confirm_link(site, f"/confirm/{token}") == 200
    assert topics_of(site, "old@example.org") == ("active", ["gan"])
    with db.transaction(site.wiring.sessions()) as session:
        gone = db.find_subscriber(session, "old@example.org")
        assert gone is not None
        gone.status = "unsubscribed"
    assert confirm_link(site, f"/confirm/{token}") == 404


def test_a_confirmation_token_for_twenty_long_topics_stays_short(site: Site) -> None:
    topics = [f"t{n}=" + " ".join(f"word{n}x{k}" for k in range(12)) for n in range(20)]
    with db.transaction(site.wiring.sessions()) as session:
        subscriber, kind, request = request_subscription(
            session,
            "many@example.org",
            parse_preferences(topics),
            now=NOW,
            resend_after=timedelta(hours=1),
        )
        assert kind == "confirm" and request is not None
        token = links.confirm_token(
            KEY, subscriber.secret, 2**31 - 1, NOW, (2**31 - 1, request_digest(request))
        )
    assert len(token) <= links.MAX_TOKEN_LENGTH


def test_insecure_base_url_warning() -> None:
    assert insecure_base_url("https://digest.example.org") is None
    assert insecure_base_url("http://localhost:8000") is None
    assert insecure_base_url("http://127.0.0.1:8000") is None
    warning = insecure_base_url("http://digest.example.org")
    assert warning is not None and "not https" in warning and "RFC 8058" in warning


def test_ids_beyond_the_id_columns_are_a_404_on_every_backend(site: Site) -> None:
    """PostgreSQL's integer ids stop at 2**31 - 1: a larger one must not reach a query."""
    client = site.client()
    for number in (2**31, 2**40):
        token = links.make_token(KEY, "guessed-secret", "manage", number)
        for path in ("manage", "unsubscribe", "confirm"):
            assert client.get(f"/{path}/{token}").status_code == 404
        ref = links.digest_ref(KEY, number)
        assert client.get(f"/digest/{ref}").status_code == 404


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["manage", "unsubscribe", "u", "confirm", "digest", "view"]),
    token=st.one_of(
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=300),
        st.builds(
            lambda payload: links.make_token(KEY, "guessed-secret", "manage", payload),
            st.one_of(st.integers(), st.text(), st.lists(st.integers()), st.none()),
        ),
    ),
)
def test_any_token_is_a_404_never_an_error(site: Site, path: str, token: str) -> None:
    client = site.client()
    quoted = urllib.parse.quote(token, safe="")
    for method in ("get", "post"):
        response = getattr(client, method)(f"/{path}/{quoted}")
        assert response.status_code in (404, 400, 405), (path, token, response.status_code)


def test_a_doubled_slash_before_a_token_is_a_404_not_a_redirect(site: Site) -> None:
    """Werkzeug would merge "//" and redirect to a different token path."""
    client = site.client()
    for path in ("manage", "unsubscribe", "u", "confirm", "digest"):
        for method in ("get", "post"):
            response = getattr(client, method)(f"/{path}//0")
            assert response.status_code in (404, 405), (path, method, response.status_code)


@pytest.mark.parametrize(
    "payload", [1, 2**31 - 1, [42, 1764000000], [7, "2026-11-25"], list(range(40))]
)
def test_tokens_are_those_of_itsdangerous_and_read_back(payload: object) -> None:
    """Signing skips zlib on short payloads, yet tokens in emails already sent (and long
    payloads, which zlib may shorten) are exactly what itsdangerous writes and reads."""
    from itsdangerous import URLSafeSerializer

    stock = URLSafeSerializer([f"{KEY}:secret"], salt="digest-manage")
    token = links.make_token(KEY, "secret", "manage", payload)
    assert token == stock.dumps(payload)
    assert links.verify_token(KEY, "secret", "manage", token) == payload
    assert links.verify_token(KEY, "other", "manage", token) is None


def test_a_token_too_long_to_be_ours_is_not_decoded(site: Site, monkeypatch) -> None:
    """A compressed "token" inflates without bound in itsdangerous: 300 KB of zlib would
    take hundreds of MB before its signature failed. Tokens over MAX_TOKEN_LENGTH are
    404s that decode nothing."""
    import zlib

    from itsdangerous.encoding import base64_encode

    bomb = "." + base64_encode(zlib.compress(b" " * 10_000_000)).decode() + ".x"
    assert len(bomb) > links.MAX_TOKEN_LENGTH
    inflated: list[int] = []
    real = zlib.decompress
    monkeypatch.setattr(zlib, "decompress", lambda data, *a: inflated.append(1) or real(data, *a))
    client = site.client()
    for path in ("manage", "unsubscribe", "confirm", "view"):
        assert client.get(f"/{path}/{bomb}").status_code == 404
    assert links.token_payload(bomb) is None
    assert links.verify_token(KEY, "secret", "manage", bomb) is None
    assert inflated == []
    # A short compressed payload is still read (tokens itsdangerous wrote stay valid).
    token = links.make_token(KEY, "secret", "manage", list(range(40)))
    assert token.startswith(".") and len(token) <= links.MAX_TOKEN_LENGTH
    assert links.verify_token(KEY, "secret", "manage", token) == list(range(40))
    assert inflated


def test_an_uppercase_https_base_url_keeps_the_session_cookie_secure(tmp_path: Path) -> None:
    env = {
        "DIGEST_DATA_DIR": str(tmp_path / "data"),
        "DIGEST_SECRET_KEY": KEY,
        "DIGEST_BASE_URL": "HTTPS://digest.example.org",
    }
    app = create_app(load_config(None, env))
    assert app.config["SESSION_COOKIE_SECURE"] is True
