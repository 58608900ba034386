"""Rendering: HTML and text parts, escaping, links, size budget, render-once personalization."""

from __future__ import annotations

import email
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email import policy
from pathlib import Path

import jinja2
import lxml.html
import pytest
from premailer import Premailer

from digest import db
from digest.config import DigestSettings, MailConfig
from digest.deliver import DigestMailer, build_message
from digest.ingest import ingest_inputs
from digest.models import Paper, Subscriber, Topic
from digest.render import HTML_BUDGET, Recipient, Renderer, trim_abstract
from digest.select import SelectionRun
from tests.conftest import SEEDS

DAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
RECIPIENT = Recipient(
    email="ada@example.org",
    topics=["Diffusion", "All papers"],
    unsubscribe_url="https://digest.example.org/u/TOKEN",
    manage_url="https://digest.example.org/manage/TOKEN",
    view_url="https://digest.example.org/view/TOKEN",
)


@dataclass(frozen=True)
class Item:
    paper_id: int
    kind: str = "new"
    topic: str = "diffusion"
    topic_label: str | None = None
    relevance: float = 0.9
    upvotes: int | None = 12
    upvote_gain: int = 3
    matched: str = ""


def make_paper(pid: int, **fields) -> Paper:
    values = dict(
        id=pid,
        key=f"k{pid}",
        arxiv_id=f"2611.{pid:05d}",
        title_key="t",
        title=f"Paper number {pid}",
        abstract="First sentence here. Second sentence follows. " * 3,
        authors="Ada Lovelace\nAlan Turing\nGrace Hopper\nEdsger Dijkstra",
        author_count=4,
        organization="Analytical Engines Ltd",
        published_on=date(2026, 11, 20),
        categories="cs.LG",
        first_seen_at=NOW,
        updated_at=NOW,
    )
    values.update(fields)
    return Paper(**values)


@pytest.fixture(scope="module")
def seed_digest(tmp_path_factory):
    """A digest selected from the real seed captures: (items, papers)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('r') / 'r.sqlite3'}"
    factory = db.session_factory(db.open_database(url))
    ingest_inputs(factory, [str(SEEDS)], now=NOW - timedelta(hours=1), max_bytes=10**7)
    session = factory()
    subscriber = Subscriber(
        id=0,
        weekday=None,
        topics=[
            Topic(position=0, query="diffusion", label="Diffusion"),
            Topic(position=1, query="*", label=None),
        ],
    )
    selection = SelectionRun(session, NOW, DigestSettings()).select(subscriber, DAY)
    papers = db.papers_by_id(session, [item.paper_id for item in selection.items])
    return selection.items, papers


def render(items, papers, **options):
    rendered = Renderer(postal_address="Papers Digest, 1 Rue Example, Paris", **options).render(
        items, papers, digest_date=DAY
    )
    html, text = rendered.personalize(RECIPIENT)
    return rendered, html, text


def test_html_follows_email_practice(seed_digest) -> None:
    items, papers = seed_digest
    assert len(items) == 20
    rendered, html, _ = render(items, papers)
    assert len(html.encode()) < HTML_BUDGET
    tree = lxml.html.fromstring(html)
    assert tree.xpath("//meta[@name='color-scheme']/@content") == ["light dark"]
    assert tree.xpath("//meta[@name='viewport']")
    tables = tree.xpath("//table")
    assert tables and all(t.get("role") == "presentation" for t in tables)
    assert tree.xpath("//table[@class='container']/@width") == ["600"]
    assert "max-width:600px" in tree.xpath("//table[@class='container']/@style")[0].replace(" ", "")
    # CSS is inlined, the @media rules survive in the <style> block, nothing is external.
    assert tree.xpath("//p[@class='title']/@style")
    style = "".join(tree.xpath("//style/text()"))
    assert "@media (prefers-color-scheme: dark)" in style and "max-width: 620px" in style
    assert not tree.xpath("//link[@rel='stylesheet']") and "@import" not in style
    preheader = tree.xpath("//div[@class='preheader']")[0]
    assert "display:none" in preheader.get("style").replace(" ", "")
    assert preheader.text_content().startswith("16 new, 4 trending")
    assert all(img.get("alt") for img in tree.xpath("//img"))
    # Header: date and topics; footer: why, links, postal line.
    assert tree.xpath("//h1/text()") == ["20 papers on Diffusion, All papers"]
    footer = tree.xpath("//td[@class='footer']")[0].text_content()
    assert "because ada@example.org follows Diffusion, All papers" in footer
    assert "Papers Digest, 1 Rue Example, Paris" in footer
    hrefs = tree.xpath("//a/@href")
    assert {RECIPIENT.unsubscribe_url, RECIPIENT.manage_url, RECIPIENT.view_url} <= set(hrefs)
    assert all(href.startswith(("https://", "http://")) for href in hrefs)
    assert rendered.subject == (
        "Daily Papers · Wed 25 Nov · 16 new, 4 trending in Diffusion, All papers"
    )


def test_text_part_carries_the_same_papers(seed_digest) -> None:
    items, papers = seed_digest
    _, html, text = render(items, papers)
    tree = lxml.html.fromstring(html)
    html_titles = [" ".join(p.text_content().split()) for p in tree.xpath("//p[@class='title']")]
    text_titles = [line[2:] for line in text.splitlines() if line.startswith("* ")]
    assert html_titles == text_titles == [papers[i.paper_id].title for i in items]
    for paper in (papers[i.paper_id] for i in items):
        assert paper.page_url in text
    assert "Unsubscribe: https://digest.example.org/u/TOKEN" in text
    assert "Papers Digest, 1 Rue Example, Paris" in text
    assert "== Diffusion ==" in text and "== All papers ==" in text


def test_paper_details() -> None:
    paper = make_paper(
        1,
        abstract=("We propose a method. " * 30).strip(),
        github_url="https://github.com/ada/engine",
        project_url="https://engine.example.org",
    )
    item = Item(
        1,
        kind="trending",
        upvotes=40,
        upvote_gain=25,
        topic="diffusion",
        topic_label="Diff",
        matched="Diffusion Models, <b>",
    )
    _, html, text = render([item], {1: paper})
    tree = lxml.html.fromstring(html)
    assert tree.xpath("//p[@class='title']/a/@href") == ["https://huggingface.co/papers/2611.00001"]
    assert tree.xpath("//span[contains(@class,'badge')]/text()") == ["trending"]
    meta = " ".join(tree.xpath("//p[@class='meta']")[0].text_content().split())
    assert meta == (
        "trending ▲ 40 (+25 today) · Ada Lovelace, Alan Turing, Grace Hopper et al. · "
        "Analytical Engines Ltd · 20 Nov 2026"
    )
    links = dict(
        zip(
            tree.xpath("//p[@class='links']/a/text()"),
            tree.xpath("//p[@class='links']/a/@href"),
            strict=True,
        )
    )
    assert links == {
        "PDF": "https://arxiv.org/pdf/2611.00001",
        "arXiv": "https://arxiv.org/abs/2611.00001",
        "Code": "https://github.com/ada/engine",
        "Project": "https://engine.example.org",
    }
    abstract = tree.xpath("//p[@class='abstract']")[0].text_content()
    assert abstract.endswith("We propose a method. Read more")
    assert len(abstract) < 420
    assert "  [TRENDING] · ▲ 40 (+25 today) · Ada Lovelace" in text
    # Why it is here: the matched words (highlighted, escaped) and the upvote gain.
    assert "  Matched “Diff”: “Diffusion Models”, “<b>” · ▲ +25 today" in text
    reason = tree.xpath("//p[@class='links']")[0]
    assert [mark.text for mark in reason.xpath("mark")] == ["Diffusion Models", "<b>"]
    assert reason.text_content().endswith("Matched “Diff”: Diffusion Models, <b> · ▲ +25 today")


def test_authors_as_a_count_and_papers_without_arxiv_ids() -> None:
    paper = make_paper(2, arxiv_id=None, authors="", author_count=7, organization=None)
    _, html, _ = render([Item(2, upvotes=None, upvote_gain=0)], {2: paper})
    tree = lxml.html.fromstring(html)
    assert " ".join(tree.xpath("//p[@class='meta']")[0].text_content().split()) == (
        "new · 7 authors · 20 Nov 2026"
    )
    assert tree.xpath("//p[@class='title']/a/@href") == [
        "https://huggingface.co/papers?q=Paper%20number%202"
    ]


@pytest.mark.parametrize(
    ("text", "limit", "expected", "cut"),
    [
        ("Short one.", 400, "Short one.", False),
        ("One. Two three. Four five six.", 16, "One. Two three.", True),
        ("A" * 50 + " word " + "B" * 10, 40, "…", True),
        ("Mr. Smith went. Then left.", 20, "Mr. Smith went.", True),
    ],
)
def test_trim_abstract_at_sentence_boundaries(text, limit, expected, cut) -> None:
    trimmed, was_cut = trim_abstract(text, limit)
    assert was_cut == cut
    assert trimmed.endswith(expected) and len(trimmed) <= limit + 1


HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'


def test_feed_strings_are_escaped_and_bad_links_dropped() -> None:
    paper = make_paper(
        3,
        title=HOSTILE,
        abstract=f"An abstract with {HOSTILE} inside.",
        authors=f"Eve {HOSTILE}\nMallory",
        organization="<b>Org</b>",
        github_url="javascript:alert(1)",
        project_url="//evil.example.org/relative",
        arxiv_id=None,
        source_url="javascript:alert(2)",
    )
    item = Item(3, topic_label='<i>label</i>"onmouseover="x')
    _, html, text = render([item], {3: paper})
    tree = lxml.html.fromstring(html)
    assert not tree.xpath("//script") and not tree.xpath("//img") and not tree.xpath("//b")
    assert not tree.xpath("//*[@onerror or @onmouseover]")
    assert tree.xpath("//p[@class='title']")[0].text_content() == HOSTILE
    assert "javascript:" not in html and "evil.example.org" not in html
    hrefs = tree.xpath("//a/@href")
    assert all(href.startswith("https://") for href in hrefs)
    assert HOSTILE in text  # the text part is plain text: shown as typed


def test_size_budget_with_the_largest_digest(tmp_path: Path) -> None:
    long_abstract = "This sentence is long and full of words about things. " * 100
    papers = {
        i: make_paper(i, title="A very long title " * 12, abstract=long_abstract)
        for i in range(1, 21)
    }
    items = [Item(i, topic_label=f"Topic {i % 4}") for i in papers]
    _, html, _ = render(items, papers)
    assert len(html.encode()) < HTML_BUDGET
    assert len(lxml.html.fromstring(html).xpath("//p[@class='title']")) == 20
    # A tighter budget trims abstracts, then drops the last papers, and says so.
    _, html, text = render(items, papers, budget=30_000)
    assert len(html.encode()) <= 30_000
    shown = len(lxml.html.fromstring(html).xpath("//p[@class='title']"))
    assert 0 < shown < 20
    assert f"{20 - shown} more left out to keep this email small" in text


def test_subject_stays_short_with_many_topics() -> None:
    papers = {i: make_paper(i) for i in range(1, 7)}
    items = [Item(i, topic_label=f"A rather long topic label {i}") for i in papers]
    rendered, _, _ = render(items, papers)
    assert len(rendered.subject) <= 78
    assert rendered.subject.startswith("Daily Papers · Wed 25 Nov · 6 new in A rather long topic")
    assert re.search(r"\+\d more$", rendered.subject)


def test_empty_digest_says_so() -> None:
    rendered, html, text = render([], {})
    assert rendered.subject == "Daily Papers · Wed 25 Nov · nothing new"
    assert "Nothing new matched your topics today" in text
    assert "Nothing new matched your topics today" in html


def test_operators_can_override_templates(tmp_path: Path) -> None:
    (tmp_path / "paper.html.j2").write_text(
        '<tr><td class="paper"><p class="title">CUSTOM {{ paper.title }}</p></td></tr>\n',
        encoding="utf-8",
    )
    _, html, _ = render([Item(1)], {1: make_paper(1)}, templates=tmp_path)
    assert "CUSTOM Paper number 1" in html
    assert "Manage preferences" in html  # the other templates still come from the bundle
    (tmp_path / "paper.html.j2").write_text("{{ paper.no_such_field }}", encoding="utf-8")
    with pytest.raises(jinja2.UndefinedError):
        render([Item(1)], {1: make_paper(1)}, templates=tmp_path)


def test_personalization_does_not_rerun_premailer(monkeypatch, seed_digest) -> None:
    items, papers = seed_digest
    calls = []
    original = Premailer.transform

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Premailer, "transform", counting)
    mailer = DigestMailer(
        renderer=Renderer(),
        mail=MailConfig("digest@example.org", "Papers Digest", None, ""),
        base_url="https://digest.example.org",
        secret_key="k" * 32,
    )
    bodies = set()
    for n in range(25):
        subscriber = Subscriber(id=n + 1, email=f"user{n}@example.org", secret=f"s{n}", topics=[])
        rendered = mailer.rendered("hash-1", items, papers, DAY, weekly=False)
        message = mailer.message(subscriber, rendered, DAY, NOW)
        bodies.add(message.get_body(("html",)).get_content())
        assert f"user{n}@example.org" in message.get_body(("plain",)).get_content()
    assert len(calls) == 1 and mailer.renders == 1
    assert len(bodies) == 25  # each copy carries its own links and address


def test_rendered_digest_scores_low_with_spamassassin(seed_digest, tmp_path: Path) -> None:
    assert shutil.which("spamassassin"), "spamassassin must be installed (.ci/run installs it)"
    items, papers = seed_digest
    rendered, html, text = render(items, papers)
    message = build_message(
        mail=MailConfig("digest@papers.example.org", "Papers Digest", None, "1 Rue Example, Paris"),
        to="ada@example.org",
        subject=rendered.subject,
        html=html,
        text=text,
        msgid="<digest.20261125.1.abc@papers.example.org>",
        sent_at=NOW,
        unsubscribe_url=RECIPIENT.unsubscribe_url,
    )
    raw = message.as_bytes()
    assert email.message_from_bytes(raw, policy=policy.default)["Subject"] == rendered.subject
    result = subprocess.run(
        ["spamassassin", "-t", "-L"], input=raw, capture_output=True, timeout=120, check=False
    )
    report = result.stdout.decode("utf-8", "replace")
    score = float(re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report).group(1))
    assert score < 1.0, report[report.find("Content analysis") :]
