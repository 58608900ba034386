"""Every link and form of the web front leads somewhere that works: topic pages that list
every match the email counts, `like:ID` topics shown by title, relative form actions,
plain 404s for unknown paths (Flask's test client on a real database)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from digest import db, relevance
from digest.deliver import send_digests
from digest.schedule import due_subscribers
from digest.subscribers import subscribe
from tests.test_web import BASE, NOW, Site, active_subscriber, make_site, token_links


@pytest.fixture
def site(tmp_path: Path, seeds: Path, db_url: str) -> Iterator[Site]:
    site = make_site(tmp_path, seeds, db_url, subscribe_rate_limit="1000 per minute")
    yield site
    site.app.extensions["digest.postman"].drain()
    site.wiring.dispose()


def form_actions(page: str) -> list[str]:
    return re.findall(r'<form[^>]*action="([^"]*)"', page)


def test_every_form_on_the_manage_page_posts_to_the_same_origin(site: Site) -> None:
    """An absolute action to base_url is blocked by CSP form-action 'self' when the page
    was opened under another host name (localhost vs 127.0.0.1)."""
    ada = active_subscriber(site)
    paths = token_links(site, ada)
    page = site.client().get(paths.manage).get_data(as_text=True)
    actions = form_actions(page)
    assert actions == [paths.manage, paths.unsubscribe]
    assert all(action.startswith("/") and "//" not in action for action in actions)


def send_first_digest(site: Site, *topics: str) -> EmailMessage:
    with db.transaction(site.wiring.sessions()) as session:
        subscribe(session, "ada@example.org", list(topics), now=NOW, timezone="UTC")
    site.clock.now = NOW.replace(hour=7, minute=30)
    report = send_digests(
        site.wiring.sender(),
        lambda session: due_subscribers(session, site.clock.now, timedelta(hours=6)),
        now=site.clock.now,
        settings=site.wiring.config.digest,
    )
    assert report.sent == 1
    return site.mail()[-1]


def listed_titles(page: str) -> list[str]:
    return re.findall(r'<h4 class="paper-title"><a [^>]*>([^<]*)</a>', page)


def test_n_more_matched_leads_to_a_page_listing_every_match_it_counted(site: Site) -> None:
    message = send_first_digest(site, "diffusion model")
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"(\d+) more matched: {re.escape(BASE)}(/preview\?\S+)", text)
    assert found, text
    more, path = int(found.group(1)), found.group(2)
    assert path == "/preview?topic=diffusion%20model"
    shown = text.split("== diffusion model ==", 1)[1].split("more matched", 1)[0].count("\n* ")
    assert (shown, more) == (10, 12)
    page = site.client().get(path).get_data(as_text=True)
    assert f"{shown + more} papers match “diffusion model” in the last 7 days" in page
    titles = listed_titles(page)
    assert len(titles) == shown + more == 22 and len(set(titles)) == 22
    # The email's papers are the page's best ones.
    emailed = re.findall(r"^\* (.+)$", text, re.M)
    assert all(title.split("$")[0] in "\n".join(titles) for title in emailed)
    # The as-you-type hint counts the same papers.
    hint = site.client().get("/api/match?q=diffusion model").get_json()
    assert (hint["count"], hint["capped"], hint["days"]) == (22, False, 7)
    assert hint["examples"] == [html.unescape(title) for title in titles[:3]]


def test_a_topic_page_pages_through_every_match(site: Site) -> None:
    client = site.client()
    first = client.get("/preview?topic=*").get_data(as_text=True)
    assert "540 papers match “Today&#39;s top papers” in the last 7 days" in first
    assert "1–25 (page 1 of 22)" in first and 'rel="prev"' not in first
    seen: list[str] = []
    path: str | None = "/preview?topic=*"
    while path:
        page = client.get(path).get_data(as_text=True)
        seen += listed_titles(page)
        nxt = re.search(r'<a href="([^"]+)" rel="next">', page)
        path = html.unescape(nxt.group(1)) if nxt else None
    assert len(seen) == 540 and len(set(seen)) == 540
    assert "526–540 (page 22 of 22)" in page and 'rel="prev"' in page
    # A page beyond the last (or not a number) shows the first.
    assert (
        listed_titles(client.get("/preview?topic=*&page=99").get_data(as_text=True)) == (seen[:25])
    )


def test_a_count_that_hit_the_candidate_limit_says_so(site: Site) -> None:
    hint = site.client().get("/api/match?q=the").get_json()
    assert hint["capped"] is True and 0 < hint["count"] <= relevance.CANDIDATE_LIMIT
    page = site.client().get("/preview?topic=the").get_data(as_text=True)
    assert f"{hint['count']}+ papers match “the”" in page
    assert f"Only the {hint['count']} best are listed" in page
    # Below the limit the count is exact.
    assert site.client().get("/api/match?q=diffusion").get_json()["capped"] is False
