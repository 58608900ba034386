"""Every link and form of the web front leads somewhere that works: topic pages that list
every match the email counts, `like:ID` topics shown by title, relative form actions,
plain 404s for unknown paths (Flask's test client on a real database)."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import select

from digest import db, relevance
from digest.config_values import canonical_timezones
from digest.models import Delivery, Paper
from digest.render import Renderer
from digest.select import SelectionRun
from digest.subscribers import subscribe
from digest.views import paper_title
from tests import test_web as web_tests
from tests.test_web import (
    BASE,
    NOW,
    Site,
    active_subscriber,
    csrf_token,
    send_due_digests,
    subscribe_form,
    token_links,
)

site = web_tests.site  # the same fixture: a fresh site on the seeds per test


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
    assert send_due_digests(site) == 1
    return site.mail()[-1]


def listed_titles(page: str) -> list[str]:
    return re.findall(r'<h4 class="paper-title"><a [^>]*>([^<]*)</a>', page)


def test_n_more_matched_leads_to_a_page_listing_every_match_it_counted(site: Site) -> None:
    message = send_first_digest(site, "diffusion model")
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"(\d+) more matched:\s+{re.escape(BASE)}(/preview\?\S+)", text)
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
    hint = site.client().get("/api/match?q=model").get_json()
    assert hint["capped"] is True and 0 < hint["count"] <= relevance.CANDIDATE_LIMIT
    page = site.client().get("/preview?topic=model").get_data(as_text=True)
    assert f"{hint['count']}+ papers match “model”" in page
    assert f"Only the {hint['count']} best are listed" in page
    # Below the limit the count is exact.
    assert site.client().get("/api/match?q=diffusion").get_json()["capped"] is False


def paper_named(site: Site, paper_id: int) -> tuple[str, str]:
    """(reference, title as shown) of a seed paper: its arXiv id, else its id."""
    with site.wiring.sessions()() as session:
        paper = session.get(Paper, paper_id)
        assert paper is not None
        return paper.arxiv_id or str(paper.id), paper_title(paper)


def liked_name(title: str) -> str:
    return f"papers like “{title[:49].rstrip()}…”" if len(title) > 50 else f"papers like “{title}”"


def test_every_paper_in_a_digest_links_to_papers_like_it(site: Site) -> None:
    message = send_first_digest(site, "diffusion model")
    html_part = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    with site.wiring.sessions()() as session:
        delivery = session.scalars(select(Delivery)).one()
        assert delivery.digest is not None
        papers = [item.paper for item in delivery.digest.items]
        wanted = [f"{BASE}/preview?topic=like%3A{paper.arxiv_id or paper.id}" for paper in papers]
    assert len(wanted) == 10
    assert re.findall(
        r'<a class="like-link" href="([^"]+)"[^>]*>More like this</a>', html_part
    ) == (wanted)
    assert re.findall(r"More like this:\s+(\S+)", text) == wanted
    # The link opens a page of papers like it, named by its title, with a way to subscribe.
    first = papers[0]
    reference, title = paper_named(site, first.id)
    page = site.client().get(wanted[0].removeprefix(BASE))
    assert page.status_code == 200
    body = html.unescape(page.get_data(as_text=True))
    heading = re.search(r'<h2 id="matches-title">([^<]*)</h2>', body)
    assert (
        heading
        and heading.group(1) == f"{len(listed_titles(body))} {liked_name(title)} in the last 7 days"
    )
    # The raw id only where the reader can edit or subscribe to it.
    assert body.count(f"like:{reference}") == 2
    subscribe_link = re.search(r'href="(/\?topic=[^"]+)">Subscribe to this topic', body)
    assert subscribe_link and subscribe_link.group(1) == f"/?topic=like:{reference}"
    form = site.client().get(f"/?topic=like%3A{reference}").get_data(as_text=True)
    assert f'name="topic" value="like:{reference}"' in form


def test_without_a_base_url_there_is_no_like_link(site: Site) -> None:
    with site.wiring.sessions()() as session:
        items = SelectionRun(session, NOW, site.wiring.config.digest).topic_listing("gan").items
        papers = db.papers_by_id(session, [item.paper_id for item in items])
    rendered = Renderer().render(items, papers, digest_date=NOW.date())
    assert items and "More like this" not in rendered.html + rendered.text
    linked = Renderer().render(items, papers, digest_date=NOW.date(), base_url=BASE)
    assert linked.html.count("More like this") == linked.text.count("More like this") == len(items)


def test_a_like_topic_is_shown_by_its_paper_title(site: Site) -> None:
    reference, title = paper_named(site, 492)
    name = liked_name(title)
    message = send_first_digest(site, f"like:{reference}")
    text = message.get_body(("plain",)).get_content()
    html_part = html.unescape(message.get_body(("html",)).get_content())
    assert f"10 new {name}"[:30] in message["Subject"] and "like:" not in message["Subject"]
    # The heading says it as the subject does, in both parts and on the web copy.
    heading = f"10 {name}"
    assert " ".join(text.split()).startswith(f"Daily Papers: {heading} Wednesday")
    assert re.findall(r'<h1 class="heading"[^>]*>([^<]*)</h1>', html_part) == [heading]
    web_copy = re.search(rf"{re.escape(BASE)}(/digest/\S+)", text)
    assert web_copy is not None
    page = html.unescape(site.client().get(web_copy.group(1)).get_data(as_text=True))
    assert re.findall(r"<h2>([^<]*)</h2>", page) == [heading]
    assert f"== {name} ==" in text
    assert f"follows {name} on" in " ".join(text.split())
    assert re.findall(r'<h2 class="topic"[^>]*>([^<]*)</h2>', html_part) == [name]
    assert f"like:{reference}" not in text and f"like:{reference}" not in html_part
    # Each paper's reason names the topic without quoting its quotes again.
    for part in (" ".join(text.split()), " ".join(html_part.split())):
        assert part.count(f"Matched {name}: ") == 10
        assert "“papers like" not in part and "“”" not in part
    # The stored topic stays the query.
    ada = site.subscriber("ada@example.org")
    assert ada is not None and [t.query for t in ada.topics] == [f"like:{reference}"]
    # The manage page shows the query only in its field; the confirmation email names it.
    manage = html.unescape(site.client().get(token_links(site, ada).manage).get_data(as_text=True))
    assert manage.count(f"like:{reference}") == 1 and 'value="like:' in manage
    client = site.client()
    client.post("/", data=subscribe_form(client, "bob@example.org", f"like:{reference}"))
    confirm = site.mail()[-1].get_body(("plain",)).get_content()
    assert f"on: {name}." in " ".join(confirm.replace("-\n", "-").split())


def test_an_unknown_like_id_is_an_error_in_words_for_the_web(site: Site) -> None:
    client = site.client()
    wording = "like:99999: no such paper here."
    hint = client.get("/api/match?q=like:99999").get_json()
    assert hint["error"].startswith(wording) and hint["count"] == 0
    page = client.get("/preview?topic=like:99999")
    body = html.unescape(page.get_data(as_text=True))
    assert page.status_code == 400 and wording in body and "Nothing new" not in body
    form = client.post("/", data=subscribe_form(client, "new@example.org", "like:99999"))
    body = html.unescape(form.get_data(as_text=True))
    assert form.status_code == 400 and wording in body
    assert "digest papers" not in body and "`" not in body


def test_the_web_copy_of_a_digest_has_its_more_matched_links(site: Site) -> None:
    message = send_first_digest(site, "diffusion model")
    text = message.get_body(("plain",)).get_content()
    path = re.search(rf"{re.escape(BASE)}(/digest/\S+)", text)
    assert path and "12 more matched" in text
    page = site.client().get(path.group(1)).get_data(as_text=True)
    assert f'<a href="{BASE}/preview?topic=diffusion%20model">12 more matched</a>' in page


def test_unknown_paths_are_a_plain_404_and_robots_keep_off_token_pages(site: Site) -> None:
    client = site.client()
    for path in ("/nothing-here", "/favicon.ico", "/manage"):
        response = client.get(path)
        body = response.get_data(as_text=True)
        assert response.status_code == 404, path
        assert "Page not found" in body and "This link is not valid" not in body
    # A token's page keeps its message.
    assert "This link is not valid any more" in client.get("/manage/garbage").get_data(as_text=True)
    robots = client.get("/robots.txt")
    assert robots.status_code == 200 and robots.mimetype == "text/plain"
    assert robots.get_data(as_text=True) == (
        "User-agent: *\nDisallow: /confirm/\nDisallow: /manage/\nDisallow: /unsubscribe/\n"
        "Disallow: /u/\nDisallow: /digest/\nDisallow: /view/\nDisallow: /api/\n"
    )
    # Pages declare no favicon, so browsers do not ask for /favicon.ico.
    assert '<link rel="icon" href="data:,">' in client.get("/").get_data(as_text=True)


def test_an_expired_confirmation_link_says_to_subscribe_again(site: Site) -> None:
    client = site.client()
    client.post("/", data=subscribe_form(client, "late@example.org", "diffusion"))
    message = site.mail()[-1].get_body(("plain",)).get_content()
    found = re.search(rf"{re.escape(BASE)}(/confirm/\S+)", message)
    assert found
    site.clock.now = NOW + timedelta(hours=49)
    page = client.get(found.group(1))
    body = html.unescape(page.get_data(as_text=True))
    assert page.status_code == 410
    assert "This confirmation link has expired (links work for 48 hours)." in body
    assert "Subscribe again to get a new link." in body
    # A forged or unknown confirmation token still gets the token message.
    assert client.get(found.group(1)[:-3] + "xyz").status_code == 404


def test_subscribing_again_from_the_unsubscribe_page_is_one_step(site: Site) -> None:
    ada = active_subscriber(site)
    paths = token_links(site, ada)
    client = site.client()
    done = client.post(
        paths.unsubscribe, data={"csrf_token": csrf_token(client, paths.unsubscribe)}
    )
    page = done.get_data(as_text=True)
    assert site.subscriber("ada@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    assert form_actions(page) == [paths.manage]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token and 'name="action" value="resubscribe"' in page
    back = client.post(paths.manage, data={"csrf_token": token.group(1), "action": "resubscribe"})
    assert back.status_code == 303
    assert site.subscriber("ada@example.org").status == "active"  # type: ignore[union-attr]


def test_forms_list_canonical_timezones_and_keep_a_stored_alias(site: Site) -> None:
    page = site.client().get("/").get_data(as_text=True)
    zones = re.findall(r'<option value="([A-Za-z_/+-]+/[^"]+|UTC)"', page)
    assert "Africa/Asmara" in zones and "Europe/Kyiv" in zones and "UTC" in zones
    for alias in (
        "Africa/Asmera",
        "America/Argentina/ComodRivadavia",
        "Asia/Calcutta",
        "US/Eastern",
    ):
        assert alias not in zones
    assert len(zones) == len(set(zones)) == len(canonical_timezones())
    # A subscriber whose stored zone is an alias still sees it chosen, and may keep it.
    with db.transaction(site.wiring.sessions()) as session:
        ada, _ = subscribe(session, "ada@example.org", ["gan"], now=NOW, timezone="Asia/Calcutta")
        list(ada.topics)
    manage = site.client().get(token_links(site, ada).manage).get_data(as_text=True)
    assert '<option value="Asia/Calcutta" selected>' in manage
    assert '<option value="Asia/Kolkata">' in manage


def test_the_manage_page_words_an_empty_next_digest_for_its_date(site: Site) -> None:
    """NOW is a Wednesday at 08:00 UTC; a subscriber sent at 01:00, whose window for today
    (grace_hours) has closed, next gets Thursday's."""
    with db.transaction(site.wiring.sessions()) as session:
        ada, _ = subscribe(session, "ada@example.org", ["zzzqx"], now=NOW, timezone="UTC", hour=1)
        list(ada.topics)
    page = site.client().get(token_links(site, ada).manage).get_data(as_text=True)
    assert "Thursday 26 November 2026" in page
    assert "Nothing new yet for Thursday" in page and "Nothing new today" not in page


def test_a_topic_with_quotes_of_its_own_is_not_quoted_again(site: Site) -> None:
    """A phrase query's quotes set it off already: the page's heading and each paper's
    reason show it as typed; a topic without quotes gets them."""
    body = html.unescape(site.client().get('/preview?topic="language model"').get_data(True))
    heading = re.search(r'<h2 id="matches-title">([^<]*)</h2>', body)
    count = site.client().get('/api/match?q="language model"').get_json()["count"]
    assert heading and heading.group(1) == (
        f'{count} papers match "language model" in the last 7 days'
    )
    reasons = re.findall(r'<span class="reason">Matched ([^:<]*)', body)
    assert reasons == ['"language model"'] * 25
    plain = html.unescape(site.client().get("/preview?topic=language model").get_data(True))
    assert "papers match “language model” in the last 7 days" in plain
    assert re.findall(r'<span class="reason">Matched ([^:<]*)', plain)[0] == "“language model”"
