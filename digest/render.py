"""Render stage: a digest's items become an HTML email (CSS inlined by premailer) and a
plain-text part carrying the same content.

Rendering happens once per distinct content: `render_digest` produces a
`RenderedDigest` whose per-recipient parts (greeting, email, topics, unsubscribe,
manage and view-in-browser links) are placeholder tokens; `personalize` then
substitutes escaped values into a copy for each recipient without running
Jinja or premailer again. Every string from a feed is escaped by Jinja's
autoescape; every link passes `safe_http_url`, so `javascript:` and relative
links are dropped. The HTML stays under `HTML_BUDGET` bytes by trimming
abstracts and, if that is not enough, dropping the lowest-ranked papers.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import jinja2
from premailer import Premailer

from digest.models import Paper
from digest.resources import resource_dir
from digest.sources.records import one_line, safe_http_url

HTML_BUDGET = 100_000  # bytes; Gmail clips messages at about 102 KB
PERSONAL_ROOM = 1_000  # bytes kept for what `personalize` substitutes (address, links)
ABSTRACT_CHARS = 400
SHORT_ABSTRACT_CHARS = 180
MAX_SUBJECT = 78
AUTHORS_SHOWN = 3

# Per-recipient fields, rendered as these tokens and substituted by `personalize`.
PLACEHOLDERS = {
    "greeting": "PDXGREETINGXPD",
    "email": "PDXEMAILXPD",
    "topics": "PDXTOPICSXPD",
    "unsubscribe_url": "PDXUNSUBSCRIBEXPD",
    "manage_url": "PDXMANAGEXPD",
    "view_url": "PDXVIEWXPD",
}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


class ItemLike(Protocol):
    """What rendering needs of a selected or stored digest item."""

    @property
    def paper_id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def topic_label(self) -> str | None: ...
    @property
    def relevance(self) -> float: ...
    @property
    def upvotes(self) -> int | None: ...
    @property
    def upvote_gain(self) -> int: ...
    @property
    def matched(self) -> str: ...


@dataclass(frozen=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True)
class Reason:
    """Why a paper is in the digest: its topic, the words that matched (highlighted in
    HTML) and, for a trending paper, its upvote gain. Jinja's autoescape renders
    `__html__`; the text part renders `str`."""

    topic: str
    words: tuple[str, ...]
    gain: str = ""

    def __str__(self) -> str:
        matched = ": " + ", ".join(f"“{word}”" for word in self.words) if self.words else ""
        return f"Matched {self.topic}{matched}" + (f" · {self.gain}" if self.gain else "")

    def __html__(self) -> str:
        words = ", ".join(f"<mark>{html.escape(word)}</mark>" for word in self.words)
        text = f"Matched {html.escape(self.topic)}" + (f": {words}" if words else "")
        return text + (f" · {html.escape(self.gain)}" if self.gain else "")


@dataclass(frozen=True)
class PaperView:
    title: str
    url: str | None
    kind: str
    topic: str
    matched: tuple[str, ...]
    upvotes: int | None
    gain: int
    votes: str
    byline: str
    date: str
    abstract: str
    trimmed: bool
    links: tuple[Link, ...]
    period: str = "today"

    @property
    def facts(self) -> str:
        """Badge, votes, authors and date on one line, for the text part."""
        parts = [f"[{self.kind.upper()}]", self.votes, self.byline, self.date]
        return " · ".join(part for part in parts if part)

    @property
    def reason(self) -> Reason:
        gain = f"▲ +{self.gain} {self.period}" if self.kind == "trending" and self.gain else ""
        return Reason(f"“{self.topic}”", self.matched, gain)


@dataclass(frozen=True)
class Section:
    title: str
    papers: tuple[PaperView, ...]
    more: int = 0  # papers that matched beyond the caps
    more_url: str | None = None  # where to see them all


@dataclass(frozen=True)
class DigestView:
    """Everything the templates show, already cleaned; shared by every recipient."""

    digest_date: date
    weekly: bool
    sections: tuple[Section, ...]
    site_name: str
    postal_address: str
    new_count: int = 0
    trending_count: int = 0
    omitted: int = 0

    @property
    def brand(self) -> str:
        return "Weekly Papers" if self.weekly else "Daily Papers"

    @property
    def frequency_word(self) -> str:
        return "weekly" if self.weekly else "daily"

    @property
    def gain_period(self) -> str:
        return "this week" if self.weekly else "today"

    @property
    def topic_titles(self) -> list[str]:
        return [section.title for section in self.sections]

    @property
    def date_long(self) -> str:
        return f"{self.digest_date:%A} {self.digest_date.day} {self.digest_date:%B %Y}"

    @property
    def heading(self) -> str:
        if not self.sections:
            return "Nothing new today"
        return f"{self.paper_count} papers on {join_titles(self.topic_titles, 60)}"

    @property
    def paper_count(self) -> int:
        return sum(len(section.papers) for section in self.sections)

    @property
    def summary(self) -> str:
        parts = [f"{self.new_count} new"]
        if self.trending_count:
            parts.append(f"{self.trending_count} trending")
        if self.omitted:
            parts.append(f"{self.omitted} more left out to keep this email small")
        return ", ".join(parts)

    @property
    def subject(self) -> str:
        head = f"{self.brand} · {self.digest_date:%a} {self.digest_date.day} {self.digest_date:%b}"
        if not self.sections:
            return f"{head} · nothing new"
        counts = f"{self.new_count} new" if self.new_count else ""
        if self.trending_count:
            counts += (", " if counts else "") + f"{self.trending_count} trending"
        prefix = f"{head} · {counts} in "
        return prefix + join_titles(self.topic_titles, MAX_SUBJECT - len(prefix))

    @property
    def preheader(self) -> str:
        if not self.sections:
            return "Nothing new matched your topics today."
        first = self.sections[0].papers[0].title
        return clip(f"{self.summary}: {first}", 140)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def join_titles(titles: Sequence[str], limit: int) -> str:
    """'a, b, c' within `limit` characters, ending in '+N more' when some do not fit."""
    titles = [one_line(title) for title in titles]
    for shown in range(len(titles), 0, -1):
        rest = len(titles) - shown
        text = ", ".join(titles[:shown]) + (f" +{rest} more" if rest else "")
        if len(text) <= limit:
            return text
    return clip(titles[0], limit) if titles else ""


def trim_abstract(text: str, limit: int = ABSTRACT_CHARS) -> tuple[str, bool]:
    """The abstract cut at a sentence boundary near `limit` characters; whether it was cut."""
    text = one_line(text)
    if len(text) <= limit:
        return text, False
    kept = ""
    for sentence in _SENTENCE_END.split(text):
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > limit:
            break
        kept = candidate
    if not kept:  # the first sentence alone is too long: cut at a word boundary
        kept = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return kept, True


def byline(paper: Paper) -> str:
    names = paper.author_names
    if names:
        shown = ", ".join(names[:AUTHORS_SHOWN])
        people = shown + (" et al." if len(names) > AUTHORS_SHOWN else "")
    elif paper.author_count:
        people = f"{paper.author_count} author{'s' if paper.author_count != 1 else ''}"
    else:
        people = ""
    return " · ".join(part for part in (people, paper.organization or "") if part)


def topic_title(query: str, label: str | None) -> str:
    """How a topic is shown: its label, else its query; `*` is 'All papers'."""
    return one_line(label or ("All papers" if query == "*" else query))


def paper_view(paper: Paper, item: ItemLike, abstract_chars: int, period: str) -> PaperView:
    abstract, trimmed = trim_abstract(paper.abstract, abstract_chars)
    votes = ""
    if item.upvotes is not None:
        votes = f"▲ {item.upvotes}" + (
            f" (+{item.upvote_gain} {period})" if item.upvote_gain else ""
        )
    url = safe_http_url(paper.page_url)
    candidates = [
        ("PDF", paper.pdf_url),
        ("arXiv", paper.abs_url if paper.hf_url else None),
        ("Code", paper.github_url),
        ("Project", paper.project_url),
    ]
    links = tuple(
        Link(label, safe) for label, value in candidates if (safe := safe_http_url(value))
    )
    return PaperView(
        title=one_line(paper.title),
        url=url,
        kind=item.kind,
        topic=topic_title(item.topic, item.topic_label),
        matched=tuple(word for word in item.matched.split(", ") if word),
        upvotes=item.upvotes,
        gain=item.upvote_gain,
        votes=votes,
        byline=byline(paper),
        date=f"{paper.published_on.day} {paper.published_on:%b %Y}" if paper.published_on else "",
        abstract=abstract,
        trimmed=trimmed,
        links=links,
        period=period,
    )


def build_view(
    items: Iterable[ItemLike],
    papers: dict[int, Paper],
    *,
    digest_date: date,
    weekly: bool,
    site_name: str,
    postal_address: str,
    abstract_chars: int = ABSTRACT_CHARS,
    limit: int | None = None,
    more: Mapping[str, int] | None = None,
    base_url: str | None = None,
) -> DigestView:
    """Group items by topic, in their order, into what the templates show.

    `more` counts, per topic query, the papers that matched beyond the caps; with a
    `base_url` their section links to the site's preview of that topic.
    """
    chosen = list(items)
    omitted = 0
    if limit is not None and len(chosen) > limit:
        omitted = len(chosen) - limit
        chosen = chosen[:limit]
    sections: dict[str, list[PaperView]] = {}
    queries: dict[str, str] = {}
    for item in chosen:
        view = paper_view(
            papers[item.paper_id], item, abstract_chars, "this week" if weekly else "today"
        )
        sections.setdefault(view.topic, []).append(view)
        queries.setdefault(view.topic, item.topic)

    def section(title: str, views: list[PaperView]) -> Section:
        query = queries[title]
        extra = (more or {}).get(query, 0)
        url = f"{base_url.rstrip('/')}/preview?topic={quote(query)}" if base_url else None
        return Section(title, tuple(views), extra, safe_http_url(url) if extra else None)

    return DigestView(
        digest_date=digest_date,
        weekly=weekly,
        sections=tuple(section(title, views) for title, views in sections.items()),
        site_name=one_line(site_name),
        postal_address=one_line(postal_address),
        new_count=sum(1 for item in chosen if item.kind == "new"),
        trending_count=sum(1 for item in chosen if item.kind == "trending"),
        omitted=omitted,
    )


def template_environment(override: Path | None = None, *, html_mode: bool) -> jinja2.Environment:
    """Jinja with StrictUndefined; autoescape for HTML. An override folder is searched first."""
    folders = [str(override)] if override else []
    folders.append(str(resource_dir("templates")))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        autoescape=html_mode,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class Recipient:
    """The per-recipient parts of a digest email."""

    email: str
    topics: Sequence[str]
    unsubscribe_url: str
    manage_url: str
    view_url: str
    greeting: str = ""

    def values(self) -> dict[str, str]:
        return {
            "greeting": one_line(self.greeting or f"Hello {self.email},"),
            "email": one_line(self.email),
            "topics": one_line(join_titles(list(self.topics), 300)),
            "unsubscribe_url": safe_http_url(self.unsubscribe_url) or "",
            "manage_url": safe_http_url(self.manage_url) or "",
            "view_url": safe_http_url(self.view_url) or "",
        }


@dataclass(frozen=True)
class RenderedDigest:
    """The email for one distinct content, with placeholders for the recipient."""

    subject: str
    html: str
    text: str
    view: DigestView = field(repr=False)

    def personalize(self, recipient: Recipient) -> tuple[str, str]:
        """(html, text) for one recipient: plain substitutions, no Jinja, no premailer."""
        markup, text = self.html, self.text
        for name, value in recipient.values().items():
            token = PLACEHOLDERS[name]
            markup = markup.replace(token, html.escape(value, quote=True))
            text = text.replace(token, value)
        return markup, text


@dataclass
class Renderer:
    """Renders digests with the bundled templates, or an operator's override folder."""

    templates: Path | None = None
    site_name: str = "papers digest"
    postal_address: str = ""
    budget: int = HTML_BUDGET
    _html: jinja2.Environment = field(init=False, repr=False)
    _text: jinja2.Environment = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._html = template_environment(self.templates, html_mode=True)
        self._text = template_environment(self.templates, html_mode=False)

    def _render(self, view: DigestView) -> RenderedDigest:
        context = {"digest": view, **PLACEHOLDERS}
        raw_html = self._html.get_template("digest.html.j2").render(context)
        inlined = Premailer(
            raw_html,
            keep_style_tags=True,
            strip_important=False,
            remove_classes=False,
            cssutils_logging_level="CRITICAL",
            disable_validation=True,
        ).transform()
        text = self._text.get_template("digest.txt.j2").render(context)
        return RenderedDigest(subject=view.subject, html=inlined, text=text, view=view)

    def render(
        self,
        items: Sequence[ItemLike],
        papers: dict[int, Paper],
        *,
        digest_date: date,
        weekly: bool = False,
        more: Mapping[str, int] | None = None,
        base_url: str | None = None,
    ) -> RenderedDigest:
        """Render once; trim abstracts, then drop the last papers, until under budget.

        `more` and `base_url` make each topic's "N more matched" line and link.
        """
        attempts = [(ABSTRACT_CHARS, None)] + [
            (SHORT_ABSTRACT_CHARS, limit) for limit in range(len(items), 0, -1)
        ]
        for abstract_chars, limit in attempts:
            view = build_view(
                items,
                papers,
                digest_date=digest_date,
                weekly=weekly,
                site_name=self.site_name,
                postal_address=self.postal_address,
                abstract_chars=abstract_chars,
                limit=limit,
                more=more,
                base_url=base_url,
            )
            rendered = self._render(view)
            if len(rendered.html.encode("utf-8")) <= self.budget - PERSONAL_ROOM:
                break
        return rendered
