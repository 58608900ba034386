"""Rendering: HTML and text parts, escaping, links, size budget, render-once personalization."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from email import policy
from pathlib import Path

import jinja2
import lxml.html
import pytest
import sqlalchemy
from hypothesis import given
from hypothesis import strategies as st
from premailer import Premailer

from digest import db
from digest.config import DigestSettings, MailConfig
from digest.ingest import ingest_inputs
from digest.message import DigestMailer, build_message
from digest.models import Paper, Subscriber, Topic
from digest.prose import latex_to_text, link_line, wrap_prose
from digest.render import HTML_BUDGET, Renderer
from digest.select import SelectionRun
from digest.views import (
    Reason,
    Recipient,
    clip,
    join_titles,
    quoted,
    topic_title,
    trim_abstract,
)
from tests.conftest import SEEDS

DAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
RECIPIENT = Recipient(
    email="ada@example.org",
    topics=["Diffusion", "Today's top papers"],
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
def seed_digest(tmp_path_factory, databases):
    """A digest selected from the real seed captures: (items, papers)."""
    url = databases.new(tmp_path_factory.mktemp("r"))
    engine = db.open_database(url)
    factory = db.session_factory(engine)
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
    yield selection.items, papers
    session.close()
    engine.dispose()


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
    # Fluid to 600 px, and a fixed 600 px ghost table for Outlook on Windows.
    container = tree.xpath("//table[@class='container']")[0]
    assert container.get("width") == "100%"
    assert "max-width:600px" in container.get("style").replace(" ", "")
    assert '<!--[if mso]><table role="presentation" width="600"' in html
    assert html.count("<!--[if mso]>") == 3 and html.count("<![endif]-->") == 3
    # Everything is inlined; the one <style> left holds only the @media rules
    # (dark mode, phones), which clients without <style> can do without.
    assert tree.xpath("//p[@class='title']/@style")
    [style] = tree.xpath("//style/text()")
    assert "@media (prefers-color-scheme: dark)" in style and "max-width: 620px" in style
    outside_media = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", style)
    assert outside_media.split() == [
        ":root",
        "{",
        "color-scheme:",
        "light",
        "dark;",
        "supported-color-schemes:",
        "light",
        "dark;",
        "}",
    ]
    assert not tree.xpath("//link[@rel='stylesheet']") and "@import" not in style
    # Outlook ignores opacity and overflow: nothing relies on them.
    assert "opacity" not in html and "overflow" not in html
    preheader = tree.xpath("//div[@class='preheader']")[0]
    assert preheader.get("style").replace(" ", "") == "display:none;mso-hide:all"
    assert preheader.text_content().startswith("20 new: ")
    assert all(img.get("alt") for img in tree.xpath("//img"))
    # Header: date and topics, no greeting without a name; footer: why, links, postal line.
    assert tree.xpath("//h1/text()") == ["20 papers on Diffusion and today's top papers"]
    assert [" ".join(h.text_content().split()) for h in tree.xpath("//h2")] == [
        "Diffusion",
        "Today's top papers",
    ]
    assert (
        "Hello" not in html
        and RECIPIENT.email not in tree.xpath("//td[@class='pad']")[0].text_content()
    )
    footer = tree.xpath("//td[@class='footer']")[0].text_content()
    assert "because ada@example.org follows Diffusion, Today's top papers" in footer
    assert "Papers Digest, 1 Rue Example, Paris" in footer
    hrefs = tree.xpath("//a/@href")
    assert {RECIPIENT.unsubscribe_url, RECIPIENT.manage_url, RECIPIENT.view_url} <= set(hrefs)
    assert all(href.startswith(("https://", "http://")) for href in hrefs)
    assert rendered.subject == "Daily Papers · Wed 25 Nov · 20 new in Diffusion, top papers"


def long_lines(text: str) -> list[str]:
    """Lines over 78 columns that are not a URL alone (the only thing allowed to be)."""
    return [
        line
        for line in text.splitlines()
        if len(line) > 78 and not re.fullmatch(r"\s*https?://\S+", line)
    ]


def url_lines_not_alone(text: str) -> list[str]:
    """Lines holding a URL and anything else (the README: every URL on a line of its own)."""
    return [
        line
        for line in text.splitlines()
        if "://" in line and not re.fullmatch(r"\s*\(?https?://\S+", line)
    ]


def test_text_part_carries_the_same_papers(seed_digest) -> None:
    items, papers = seed_digest
    _, html, text = render(items, papers)
    tree = lxml.html.fromstring(html)
    html_titles = [" ".join(p.text_content().split()) for p in tree.xpath("//p[@class='title']")]
    entries = re.findall(r"^\* (.*?)\n  \[", text, flags=re.MULTILINE | re.DOTALL)
    text_titles = [" ".join(entry.split()) for entry in entries]
    assert html_titles == text_titles
    assert len(text_titles) == 20
    # Prose is wrapped at 78 columns; each URL sits on a line of its own.
    assert long_lines(text) == []
    assert max(len(line) for line in text.splitlines()) > 78  # long search URLs stay whole
    for paper in (papers[i.paper_id] for i in items):
        assert f"\n  {paper.search_url}\n" in text  # seed papers have no arXiv id
    assert "\nUnsubscribe:\nhttps://digest.example.org/u/TOKEN\n" in text
    assert url_lines_not_alone(text) == []
    assert "Papers Digest, 1 Rue Example, Paris" in text
    assert "== Diffusion ==" in text and "== Today's top papers ==" in text
    assert "Hello" not in text and "\n\n\n" not in text
    assert text.startswith(
        "Daily Papers: 20 papers on Diffusion and today's top papers\n"
        "Wednesday 25 November 2026 · 20 new\n\n== Diffusion ==\n"
    )


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
    assert tree.xpath("//span[contains(@class,'badge')]/text()") == ["TRENDING"]
    meta = " ".join(tree.xpath("//p[@class='meta']")[0].text_content().split())
    assert meta == (
        "TRENDING ▲ 40 (+25 today) · Ada Lovelace, Alan Turing, Grace Hopper et al. · "
        "Analytical Engines Ltd · 20 Nov 2026"
    )
    links = list(
        zip(
            tree.xpath("//p[@class='links']/a/text()"),
            tree.xpath("//p[@class='links']/a/@href"),
            strict=True,
        )
    )
    assert links == [
        ("Hugging Face", "https://huggingface.co/papers/2611.00001"),
        ("arXiv", "https://arxiv.org/abs/2611.00001"),
        ("PDF", "https://arxiv.org/pdf/2611.00001"),
        ("Code", "https://github.com/ada/engine"),
        ("Project", "https://engine.example.org"),
    ]
    # Why it is here: the matched words (highlighted, escaped) and the upvote gain.
    reason = tree.xpath("//p[@class='reason']")[0]
    assert [mark.text for mark in reason.xpath("b")] == ["Diffusion Models", "<b>"]
    assert reason.text_content() == "Matched “Diff”: Diffusion Models, <b> · ▲ +25 today"
    abstract = tree.xpath("//p[@class='abstract']")[0].text_content()
    assert abstract.endswith("We propose a method. Read more")
    assert len(abstract) < 420
    assert (
        "  [TRENDING] · ▲\u00a040 (+25 today) · Ada Lovelace, Alan Turing, Grace Hopper\n"
        "  et\u00a0al. · Analytical Engines Ltd · 20 Nov 2026\n"
    ) in text
    assert "\n  Matched “Diff”: “Diffusion Models”, “<b>” · ▲ +25 today\n" in text
    assert "score" not in text and "score" not in html
    assert (
        "  Hugging Face:\n  https://huggingface.co/papers/2611.00001\n"
        "  arXiv:\n  https://arxiv.org/abs/2611.00001\n"
        "  PDF:\n  https://arxiv.org/pdf/2611.00001\n"
        "  Code:\n  https://github.com/ada/engine\n"
        "  Project:\n  https://engine.example.org\n"
    ) in text


def test_authors_as_a_count_and_papers_without_arxiv_ids() -> None:
    paper = make_paper(
        2,
        arxiv_id=None,
        authors="",
        author_count=1,
        organization=None,
        abstract="A long sentence. " * 40,
    )
    _, html, text = render([Item(2, upvotes=None, upvote_gain=0)], {2: paper})
    tree = lxml.html.fromstring(html)
    # A trimmed abstract offers "Read more" only where there is more to read, not a search.
    assert tree.xpath("//p[@class='abstract']/a") == []
    assert " ".join(tree.xpath("//p[@class='meta']")[0].text_content().split()) == (
        "NEW · 1 author · 20 Nov 2026"
    )
    search = "https://huggingface.co/papers?q=Paper%20number%202"
    assert tree.xpath("//p[@class='title']/a/@href") == [search]
    assert tree.xpath("//p[@class='links']/a/text()") == ["Search on Hugging Face"]
    assert f"  Search on Hugging Face:\n  {search}\n" in text  # on a line of its own
    # Known source pages (an arXiv listing without an id, a PDF) come before any search.
    listed = make_paper(
        3,
        arxiv_id=None,
        source_url="https://journal.example.org/paper/3",
        pdf_link="https://journal.example.org/paper/3.pdf",
    )
    _, html, _ = render([Item(3)], {3: listed})
    tree = lxml.html.fromstring(html)
    assert tree.xpath("//p[@class='title']/a/@href") == ["https://journal.example.org/paper/3"]
    assert tree.xpath("//p[@class='links']/a/text()") == ["Abstract", "PDF"]


def test_gains_and_the_everything_topic_read_naturally() -> None:
    papers = {i: make_paper(i) for i in (1, 2, 3)}
    # A first observation is no gain: the count shows, with no "+N today".
    _, html, text = render([Item(1, upvotes=12, upvote_gain=0)], {1: papers[1]})
    meta = " ".join(
        lxml.html.fromstring(html).xpath("//p[@class='meta']")[0].text_content().split()
    )
    assert meta.startswith("NEW ▲ 12 · Ada Lovelace")
    assert "(+" not in text
    _, html, text = render([Item(1, upvotes=0, upvote_gain=0)], {1: papers[1]})
    meta = " ".join(
        lxml.html.fromstring(html).xpath("//p[@class='meta']")[0].text_content().split()
    )
    assert meta.startswith("NEW · Ada Lovelace") and "▲" not in text
    # One paper is "1 paper"; the everything topic is "Today's top papers", with no reason line.
    rendered, html, text = render([Item(1)], {1: papers[1]})
    assert lxml.html.fromstring(html).xpath("//h1/text()") == ["1 paper on diffusion"]
    everything = [Item(i, topic="*") for i in (1, 2, 3)]
    rendered, html, text = render(everything, papers)
    tree = lxml.html.fromstring(html)
    assert tree.xpath("//h1/text()") == ["Today's top 3 papers"]
    assert tree.xpath("//h2/text()") == ["Today's top papers"]
    assert tree.xpath("//p[@class='reason']") == []
    assert rendered.subject == "Daily Papers · Wed 25 Nov · 3 new"
    assert "== Today's top papers ==" in text and "Matched" not in text
    weekly = Renderer().render(everything[:1], papers, digest_date=DAY, weekly=True)
    assert weekly.subject == "Weekly Papers · Wed 25 Nov · 1 new"
    assert "Weekly Papers: This week's top paper\n" in weekly.text
    assert "== This week's top papers ==" in weekly.text


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


def test_a_cut_title_keeps_its_closing_quote_and_says_how_many_more() -> None:
    liked = "papers like “Refine Drugs, Don't Complete Them: Uniform-Source Discrete Flows”"
    assert clip(liked, 40) == "papers like “Refine Drugs, Don't Compl…”"
    assert len(clip(liked, 40)) == 40
    assert clip("diffusion models for video", 12) == "diffusion m…"
    assert join_titles([liked, "Diffusion", "RLHF"], 50) == (
        "papers like “Refine Drugs, Don't Complet…” +2 more"  # 50 characters
    )
    assert join_titles([liked], 30) == "papers like “Refine Drugs, D…”"
    assert join_titles(["a", "b"], 10) == "a, b"


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
    if not shutil.which("spamassassin"):
        # CI (.ci/run sets CI=1 and installs it) must run this check; a fresh machine may not.
        assert not os.environ.get("CI"), "spamassassin must be installed in CI (.ci/run does)"
        pytest.skip("spamassassin is not installed (apt-get install spamassassin); CI runs this")
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


@pytest.mark.parametrize(
    ("latex", "text"),
    [
        (r"DORSal: Scenes $\textit{et al.}$", "DORSal: Scenes et al."),
        (r"points in $\mathbb{R}^3$ in $O(n^2)$ time", "points in ℝ³ in O(n²) time"),
        (r"an $\alpha$-divergence and $10^{-3}$", "an α-divergence and 10⁻³"),
        (r"T\"ULU 3 is na\"{\i}ve", "TÜLU 3 is naïve"),
        (r"less than 1\% of Evo\textbf{Lved Sign}", "less than 1% of EvoLved Sign"),
        (r"wav2vec~2.0 shows~5\% to~10\%", "wav2vec 2.0 shows 5% to 10%"),
        (r"the models\' decisions", "the models' decisions"),
        (r"We propose \method, a framework", "We propose method, a framework"),
        # Prose that only looks like LaTeX is left alone.
        ("costs $5 and $10, 91% of ~10x", "costs $5 and $10, 91% of ~10x"),
        # Malformed LaTeX never fails: it stays as it was.
        (r"broken $\frac{1}{ and \textit{open", r"broken $\frac{1}{ and \textit{open"),
        (r"\sqrt", r"\sqrt"),
    ],
)
def test_latex_becomes_readable_text(latex: str, text: str) -> None:
    assert latex_to_text(latex) == text


@given(st.text(alphabet=st.sampled_from("$\\{}^_~%&#'\"` abcxR2()=.-")))
def test_latex_conversion_never_fails(text: str) -> None:
    assert isinstance(latex_to_text(text), str)


def test_latex_in_titles_abstracts_and_authors_is_converted_but_search_keeps_it() -> None:
    title = r"DORSal: Diffusion in $\mathbb{R}^3$ $\textit{et al.}$"
    paper = make_paper(
        4,
        arxiv_id=None,
        title=title,
        abstract=r"We improve by 12\% on $\mathcal{O}(\log n)$ tasks.",
        authors='Kurt G\\"odel',
    )
    _, html, text = render([Item(4)], {4: paper})
    tree = lxml.html.fromstring(html)
    assert tree.xpath("//p[@class='title']/a/text()") == ["DORSal: Diffusion in ℝ³ et al."]
    assert tree.xpath("//p[@class='abstract']/text()") == ["We improve by 12% on 𝒪(log n) tasks."]
    assert "Kurt Gödel" in tree.xpath("//p[@class='meta']")[0].text_content()
    assert "* DORSal: Diffusion in ℝ³ et al.\n" in text
    assert tree.xpath("//div[@class='preheader']/text()") == [
        "1 new: DORSal: Diffusion in ℝ³ et al."
    ]
    assert "\\" not in html and "$" not in tree.text_content()
    # The search link looks for the title as it is stored.
    assert tree.xpath("//p[@class='title']/a/@href") == [
        "https://huggingface.co/papers?q=DORSal%3A%20Diffusion%20in%20%24%5Cmathbb%7BR%7D%5E3"
        "%24%20%24%5Ctextit%7Bet%20al.%7D%24"
    ]


def test_wrap_prose_keeps_urls_whole_and_lines_short() -> None:
    url = "https://github.com/" + "a" * 80
    wrapped = wrap_prose(f"Code is at ({url}). " + "word " * 30 + "x" * 100, "  ", "* ")
    lines = wrapped.splitlines()
    assert lines[0] == "* Code is at"
    assert lines[1] == f"  ({url})."
    assert all(len(line) <= 78 for line in lines if url not in line)
    assert lines[-2:] == ["  " + "x" * 76, "  xxxxxxxxxxxxxxxxxxxxxxxx"]
    assert wrapped.split().count("word") == 30
    # A no-break space binds; an address is never cut.
    assert wrap_prose("Grace Hopper et\u00a0al.", "", None) == "Grace Hopper et\u00a0al."
    address = "someone." + "x" * 80 + "@example.org"
    assert wrap_prose(f"sent to {address} today") == f"sent to\n{address}\ntoday"
    # A URL on a line of its own, however short.
    assert link_line("PDF", "https://arxiv.org/pdf/2611.00001") == (
        "  PDF:\n  https://arxiv.org/pdf/2611.00001"
    )
    assert link_line("PDF", url) == f"  PDF:\n  {url}"


def test_greeting_by_name_and_long_values_wrap_per_recipient(seed_digest) -> None:
    items, papers = seed_digest
    rendered = Renderer().render(items, papers, digest_date=DAY)
    named = Recipient(
        email="a.very.long.address.of.someone@department.university.example.org",
        topics=["Diffusion", "Today's top papers", "A rather long topic title for wrapping"],
        unsubscribe_url="https://digest.example.org/u/" + "T" * 90,
        manage_url=RECIPIENT.manage_url,
        view_url=RECIPIENT.view_url,
        name='Ada <b>"Countess"</b> Lovelace',
    )
    html, text = rendered.personalize(named)
    tree = lxml.html.fromstring(html)
    greeting = 'Hello Ada <b>"Countess"</b> Lovelace,'
    assert tree.xpath("//td[@class='pad']/p[@class='sub']/text()")[-1] == greeting
    assert not tree.xpath("//td[@class='pad']//b")
    assert f"\n\n{greeting}\n\n== Diffusion ==\n" in text
    assert long_lines(text) == []
    assert f"Unsubscribe:\nhttps://digest.example.org/u/{'T' * 90}\n" in text
    footer = text[text.index("\n--\n") :]
    assert " ".join(footer.split()).startswith(
        "-- You receive this daily digest because "
        "a.very.long.address.of.someone@department.university.example.org follows "
        "Diffusion, Today's top papers, A rather long topic title for wrapping on papers digest."
    )
    # Without a name: no greeting at all, never the address, and no gap where it was.
    html, text = rendered.personalize(RECIPIENT)
    assert "Hello" not in html and "Hello" not in text
    assert "\n\n\n" not in text
    assert html.count('class="sub"') == 1


def test_topics_say_how_many_more_matched_and_link_to_their_preview() -> None:
    papers = {i: make_paper(i) for i in range(1, 4)}
    items = [Item(1), Item(2), Item(3, topic='"LLM agents" -survey', topic_label="Agents")]
    rendered = Renderer().render(
        items,
        papers,
        digest_date=DAY,
        more={"diffusion": 7, '"LLM agents" -survey': 1},
        base_url="https://digest.example.org/",
    )
    html, text = rendered.personalize(RECIPIENT)
    tree = lxml.html.fromstring(html)
    links = [
        (a.text_content(), a.get("href")) for a in tree.xpath("//a") if "more" in a.text_content()
    ]
    assert links == [
        ("7 more matched", "https://digest.example.org/preview?topic=diffusion"),
        ("1 more matched", "https://digest.example.org/preview?topic=%22LLM%20agents%22%20-survey"),
    ]
    # They look like the papers' links, in light and dark mode (the class the dark
    # colours are for).
    paper_link = tree.xpath("//p[@class='links']/a[@class='link']")[0]
    assert {
        (a.get("class"), a.get("style"))
        for a in tree.xpath("//a")
        if "more matched" in a.text_content()
    } == {("link", paper_link.get("style"))}
    # The URL on its own line, and a blank line before the next section and the footer.
    assert (
        "\n\n7 more matched:\nhttps://digest.example.org/preview?topic=diffusion\n\n== Agents ==\n"
    ) in text
    assert (
        "\n\n1 more matched:\n"
        "https://digest.example.org/preview?topic=%22LLM%20agents%22%20-survey\n\n--\n"
    ) in text
    assert url_lines_not_alone(text) == []
    # Without a site address, the count alone.
    plain = Renderer().render(items, papers, digest_date=DAY, more={"diffusion": 7})
    assert "\n\n7 more matched\n\n== Agents ==\n" in plain.text and "/preview?" not in plain.text


TOPIC_MIX = [
    ("diffusion", "Diffusion & <friends>"),
    ("language model", None),
    ("reinforcement learning", "RL \"quoted\" 'single'"),
    ("speech", None),
    ("*", None),
    ("robot", None),
]


@pytest.mark.parametrize("postal", ["", 'Papers & Co, 1 <Rue> "Example", Paris'])
def test_digests_assembled_from_parts_are_the_whole_render(databases, tmp_path, postal) -> None:
    """The assembled HTML (premailer once per batch of new cards) is byte for byte what
    inlining each whole digest gives, and the assembled text what the text template
    gives, for many digests sharing cards."""
    engine = db.open_database(databases.new(tmp_path))
    factory = db.session_factory(engine)
    ingest_inputs(factory, [str(SEEDS)], now=NOW - timedelta(hours=1), max_bytes=10**7)
    options = dict(site_name='Papers <&> "Digest"', postal_address=postal)
    fast = Renderer(**options)
    slow = Renderer(**options)
    slow.parts = slow.text_parts = None
    digests = []
    with factory() as session:
        run = SelectionRun(session, NOW, DigestSettings(max_per_topic=3, max_items=8))
        for first in range(len(TOPIC_MIX)):
            for width in (1, 2, 3):
                chosen = [TOPIC_MIX[(first + k) % len(TOPIC_MIX)] for k in range(width)]
                for weekday in (None, 2):
                    topics = [
                        Topic(position=n, query=query, label=label)
                        for n, (query, label) in enumerate(chosen)
                    ]
                    selection = run.select(Subscriber(id=0, weekday=weekday, topics=topics), DAY)
                    found = db.papers_by_id(session, [item.paper_id for item in selection.items])
                    for base_url in ("https://digest.example.org/", None):
                        arguments = dict(
                            digest_date=DAY,
                            weekly=weekday is not None,
                            more=selection.more,
                            base_url=base_url,
                        )
                        digests.append((selection.items, found, arguments))
        for items, found, arguments in digests:
            assembled = fast.render(items, found, **arguments)
            whole = slow.render(items, found, **arguments)
            assert assembled.html == whole.html, arguments
            assert assembled.text == whole.text
            # The text came from the frame rendered once, not from the template.
            assert fast.text_parts is not None
            assert fast.text_parts.assemble(assembled.view) is not None
            assert assembled.personalize(RECIPIENT) == whole.personalize(RECIPIENT)
        assert fast.parts is not None
        inlined = fast.parts.inlined
        # Only digests bringing new cards inline; a card with a base_url (its "More like
        # this" link) is another card than the same paper's without one.
        assert inlined <= len(digests) * 2 / 3
        for items, found, arguments in digests:
            fast.render(items, found, **arguments)
        assert fast.parts.inlined == inlined  # every card and shell came from the cache
    engine.dispose()
    linked = sum("more matched</a>" in fast.render(i, f, **a).html for i, f, a in digests)
    assert 0 < linked < len(digests)  # both kinds of "more matched" rows were compared


def test_messages_assembled_from_encoded_parts_are_the_whole_message(seed_digest) -> None:
    """`DigestMailer.encoded` gives the bytes `message(...).as_bytes()` gives (the MIME
    boundary aside), for names or none, long addresses and every kind of recipient."""
    items, papers = seed_digest
    mail = MailConfig(
        "digest@example.org",
        "Papers Digest «Weekly»",
        "replies@example.org",
        "1 Rue Example, Paris",
        unsubscribe_mailto="unsubscribe@example.org",
    )
    mailer = DigestMailer(Renderer(), mail, "https://digest.example.org", "k" * 32)
    names = [None, "Ada", "Zoë Ünïcode-Name", "A " * 60, 'Bob <&> "quoted"']
    boundary = re.compile(rb"===============\d+==")
    compared = 0
    for weekly in (False, True):
        rendered = mailer.rendered("hash-1", items, papers, DAY, weekly=weekly)
        for n, name in enumerate(names):
            email_address = f"reader.{n}+tag@{'sub.' * (n * 6)}example.org"
            topics = [Topic(position=0, query="diffusion", label="Diffusion")]
            subscriber = Subscriber(
                id=n + 1,
                email=email_address,
                name=name,
                secret=f"s{n}",
                topics=topics,
                weekday=2 if weekly else None,
            )
            sent_at = NOW + timedelta(seconds=n)
            whole = mailer.message(subscriber, rendered, DAY, sent_at, digest_id=7).as_bytes()
            encoded = mailer.encoded(subscriber, rendered, DAY, sent_at, digest_id=7)
            assert boundary.sub(b"B", encoded.data) == boundary.sub(b"B", whole)
            assert (encoded.sender, encoded.recipient) == ("digest@example.org", email_address)
            compared += 1
    assert compared == 10
    # A non-ASCII local part is built whole (it needs SMTPUTF8).
    subscriber = Subscriber(id=99, email="zoë@example.org", secret="s", topics=[], weekday=None)
    encoded = mailer.encoded(subscriber, rendered, DAY, NOW)
    assert encoded.smtputf8 and encoded.recipient == "zoë@example.org"


BOUNDARY = re.compile(rb"===============\d+==")
MAIL = MailConfig(
    "digest@example.org",
    "Papers Digest «Daily»",
    "replies@example.org",
    'Papers & Co, 1 <Rue> "Example", Paris',
    unsubscribe_mailto="unsubscribe@example.org",
)
NAMES = [None, "Ada", "Zoë Ünïcode-Name", "A " * 60, 'Bob <&> "quoted"', "PDXEMAILXPD"]


def reader(n: int, weekly: bool, topics: list[Topic]) -> Subscriber:
    return Subscriber(
        id=n + 1,
        email=f"reader.{n}+tag@{'sub.' * (n % 4 * 6)}example.org",
        name=NAMES[n % len(NAMES)],
        secret=f"s{n}",
        topics=topics,
        weekday=2 if weekly else None,
    )


def assert_encoded_is_message(mailer, subscriber, rendered, sent_at) -> None:
    whole = mailer.message(subscriber, rendered, DAY, sent_at, digest_id=7).as_bytes()
    encoded = mailer.encoded(subscriber, rendered, DAY, sent_at, digest_id=7)
    assert BOUNDARY.sub(b"B", encoded.data) == BOUNDARY.sub(b"B", whole)


def test_encoded_messages_of_varied_digests_are_the_whole_messages(databases, tmp_path) -> None:
    """Messages assembled from encoded pieces are byte for byte the whole messages, for
    digests of every shape (weekly, the `*` topic, "more matched" rows, several topics)
    and readers with no name, long or non-ASCII names; shared pieces are encoded once."""
    engine = db.open_database(databases.new(tmp_path))
    factory = db.session_factory(engine)
    ingest_inputs(factory, [str(SEEDS)], now=NOW - timedelta(hours=1), max_bytes=10**7)
    mailer = DigestMailer(
        Renderer(site_name='Papers <&> "Digest"', postal_address=MAIL.postal_address),
        MAIL,
        "https://digest.example.org",
        "k" * 32,
    )
    compared = 0
    renderings = []
    with factory() as session:
        run = SelectionRun(session, NOW, DigestSettings(max_per_topic=4, max_items=10))
        for first in range(len(TOPIC_MIX)):
            for width in (1, 2, 3):
                chosen = [TOPIC_MIX[(first + k) % len(TOPIC_MIX)] for k in range(width)]
                topics = [
                    Topic(position=n, query=query, label=label)
                    for n, (query, label) in enumerate(chosen)
                ]
                for weekly in (False, True):
                    subscriber = reader(compared, weekly, topics)
                    selection = run.select(subscriber, DAY)
                    rendered = mailer.render_items(
                        session,
                        selection.content_hash,
                        selection.items,
                        DAY,
                        weekly,
                        selection.more,
                    )
                    assert rendered.html_parts is not None and rendered.text_parts is not None
                    renderings.append((subscriber, rendered))
                    assert_encoded_is_message(mailer, subscriber, rendered, NOW)
                    compared += 1
    engine.dispose()
    assert compared == 36
    assert any("more matched</a>" in r.html for _, r in renderings)
    assert any(
        "Today&#39;s top papers" in r.html or "Today's top papers" in r.html for _, r in renderings
    )
    pieces = len(mailer._pieces)
    for n, (subscriber, rendered) in enumerate(renderings):
        assert_encoded_is_message(mailer, subscriber, rendered, NOW + timedelta(seconds=n))
    assert len(mailer._pieces) == pieces  # every shared piece came from the cache


def test_encoded_messages_of_trending_trimmed_and_hostile_digests() -> None:
    """The same for trending papers, digests trimmed to the HTML budget (shorter abstracts,
    then papers left out), and papers whose text holds a recipient's placeholder."""
    long_abstract = "This sentence is long and full of words about things. " * 40
    papers = {
        i: make_paper(
            i,
            title=f"Paper {i} on Zoë’s “diffusion” — a title long enough to need a soft line "
            "break in quoted-printable " * (1 + i % 2),
            abstract=long_abstract,
        )
        for i in range(1, 25)
    }
    papers[3] = make_paper(3, title="Hello PDXEMAILXPD and PDXGREETINGXPD")
    papers[4] = make_paper(4, title="PDXTOPICSXPD", abstract="PDXUNSUBSCRIBEXPD")
    items = [
        Item(
            i,
            kind="trending" if i % 3 == 0 else "new",
            upvotes=i,
            upvote_gain=i % 5,
            topic="*" if i % 4 == 0 else "diffusion",
            matched="diffusion, Zoë",
        )
        for i in papers
    ]
    compared = 0
    shapes = set()
    for budget in (HTML_BUDGET, 21_000):
        mailer = DigestMailer(
            Renderer(postal_address=MAIL.postal_address, budget=budget),
            MAIL,
            "https://digest.example.org",
            "k" * 32,
        )
        for weekly in (False, True):
            for count in (2, 8, 24):
                rendered = mailer.rendered(
                    f"{count}", items[:count], papers, DAY, weekly, {"diffusion": 3, "*": 12}
                )
                view = rendered.view
                short = max(len(p.abstract) for s in view.sections for p in s.papers) < 200
                shapes.add((bool(view.omitted), short, rendered.html_parts is not None))
                for n in range(len(NAMES)):
                    topics = [Topic(position=0, query="diffusion", label="Diffusion")]
                    assert_encoded_is_message(mailer, reader(n, weekly, topics), rendered, NOW)
                    compared += 1
    assert compared == 2 * 2 * 3 * len(NAMES)
    # Whole abstracts, trimmed abstracts, papers left out (rendered whole): all compared.
    assert shapes == {(False, False, True), (False, True, True), (True, True, False)}


@given(
    start=st.text(alphabet="ab ·Zoë’“”=?_-,", min_size=1, max_size=70),
    words=st.lists(st.text(alphabet="Az09,.+-=?_'\"", min_size=1, max_size=14), max_size=14),
)
def test_any_subject_is_written_as_the_whole_message_writes_it(start, words) -> None:
    """The Subject line is folded once for a subject's start; the words after it are
    written as they are only when the email library would write them so."""
    subject = f"{start} {' '.join(words)}"
    subscriber = reader(1, False, [])
    assert_encoded_is_message(
        SUBJECT_MAILER, subscriber, replace(SUBJECT_RENDERED, subject=subject), NOW
    )


SUBJECT_MAILER = DigestMailer(Renderer(), MAIL, "https://digest.example.org", "k" * 32)
SUBJECT_RENDERED = SUBJECT_MAILER.rendered("s", [Item(1)], {1: make_paper(1)}, DAY, False)


def test_a_mailer_reads_each_paper_once_per_run(databases, tmp_path) -> None:
    """Rendering a digest whose papers were read before reads none again, and the papers
    kept survive the session that read them being rolled back (which expires its rows)."""
    engine = db.open_database(databases.new(tmp_path))
    factory = db.session_factory(engine)
    ingest_inputs(factory, [str(SEEDS)], now=NOW - timedelta(hours=1), max_bytes=10**7)
    statements: list[str] = []
    sqlalchemy.event.listen(
        engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    mailer = DigestMailer(Renderer(), MAIL, "https://digest.example.org", "k" * 32)
    topics = [Topic(position=0, query="diffusion", label="Diffusion")]
    with factory() as session:
        selection = SelectionRun(session, NOW, DigestSettings()).select(
            reader(0, False, topics), DAY
        )
        statements.clear()
        first = mailer.render_items(session, "a", selection.items, DAY, False)
        assert sum("FROM papers" in statement for statement in statements) == 1
        session.rollback()
        session.expire_all()
    with factory() as session:
        # Another content (fewer papers) of the same papers: rendered, nothing read.
        statements.clear()
        again = mailer.render_items(session, "b", selection.items[:5], DAY, True)
    assert statements == []
    assert again.view.paper_count == 5 and first.view.paper_count == len(selection.items)
    assert first.view.sections[0].papers[0].title == again.view.sections[0].papers[0].title
    engine.dispose()


@pytest.mark.parametrize(
    ("query", "label", "title", "in_quotes"),
    [
        ("diffusion", None, "diffusion", "“diffusion”"),
        ("3d", "3D", "3D", "“3D”"),
        ('"in-context learning"', None, '"in-context learning"', '"in-context learning"'),
        ("like:2611.00001", None, "papers like “Engines”", "papers like “Engines”"),
        (
            "robot OR like:2611.00001",
            None,
            "robot OR papers like “Engines”",
            "robot OR papers like “Engines”",
        ),
        # A paper title with quotes of its own is not quoted again either.
        ("like:2611.00002", None, 'papers like The "Best" Engine', 'papers like The "Best" Engine'),
        ("like:2611.00002", "Mine", "Mine", "“Mine”"),
    ],
)
def test_a_topic_is_quoted_once_however_it_reads(
    query: str, label: str | None, title: str, in_quotes: str
) -> None:
    """Topics are put in typographic quotes, unless they hold double quotes of their own
    (a phrase, a like:ID topic named by its paper): never quotes within quotes."""
    liked = {"2611.00001": "Engines", "2611.00002": 'The "Best" Engine'}
    assert topic_title(query, label, liked=liked) == title
    assert quoted(title) == in_quotes
    assert str(Reason(quoted(title), ("word",))) == f"Matched {in_quotes}: “word”"


def rendered_like_digest(items: list[Item], papers: dict[int, Paper]) -> tuple[str, str, str]:
    """(subject, HTML heading, the text part's first line) of a digest naming like:ID topics."""
    liked = {"2611.00001": "Engines", "2611.00002": "Looms"}
    rendered = Renderer().render(items, papers, digest_date=DAY, liked=liked)
    html, text = rendered.personalize(RECIPIENT)
    [heading] = lxml.html.fromstring(html).xpath("//h1/text()")
    return rendered.subject, heading, text.splitlines()[0]


def test_a_like_topic_reads_papers_like_its_title_without_on() -> None:
    """A like:ID topic is named 'papers like “<title>”': the heading and the subject say
    '3 papers like “Engines”', not '3 papers on papers like “Engines”'."""
    papers = {i: make_paper(i) for i in range(1, 6)}
    like = [Item(i, topic="like:2611.00001") for i in (1, 2, 3)]
    assert rendered_like_digest(like, papers) == (
        "Daily Papers · Wed 25 Nov · 3 new papers like “Engines”",
        "3 papers like “Engines”",
        "Daily Papers: 3 papers like “Engines”",
    )
    assert rendered_like_digest(like[:1], papers) == (
        "Daily Papers · Wed 25 Nov · 1 new paper like “Engines”",
        "1 paper like “Engines”",
        "Daily Papers: 1 paper like “Engines”",
    )
    # With other topics, they come first behind one "on" (in the subject "in"), and the
    # like:ID topics last: the count is every topic's, not one paper's likes.
    mixed = [
        Item(1, topic="diffusion", topic_label="Diffusion"),
        Item(2, topic="rlhf"),
        Item(3, topic="like:2611.00001"),
        Item(4, topic="robot"),
        Item(5, topic="like:2611.00002"),
    ]
    assert rendered_like_digest(mixed, papers) == (
        "Daily Papers · Wed 25 Nov · 5 new in Diffusion, rlhf, robot +2 more",
        "5 papers on Diffusion, rlhf, robot, like “Engines”, like “Looms”",
        "Daily Papers: 5 papers on Diffusion, rlhf, robot, like “Engines”, like “Looms”",
    )
    assert rendered_like_digest(mixed[2:], papers) == (
        "Daily Papers · Wed 25 Nov · 3 new in robot, like “Engines”, like “Looms”",
        "3 papers on robot, like “Engines”, like “Looms”",
        "Daily Papers: 3 papers on robot, like “Engines”, like “Looms”",
    )
    # Without its paper's title, a like:ID topic is its query, after "on".
    assert rendered_like_digest([Item(1, topic="like:42")], papers)[1] == "1 paper on like:42"
