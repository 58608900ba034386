"""Render stage: a digest's items become an HTML email (CSS inlined by premailer) and a
plain-text part carrying the same content.

`Renderer.render` produces a `RenderedDigest` whose per-recipient parts (greeting,
email, topics, unsubscribe, manage and view-in-browser links) are placeholder
tokens; `personalize` then substitutes escaped values into a copy for each
recipient without running Jinja or premailer again. A digest is assembled from
what is shared, inlined and rendered once per run (`HtmlParts`: each paper card
and the frame around the topics; each paper's text card), and keeps its pieces
(`Part`) so that a message can be assembled from pieces encoded once.

Every string from a feed is escaped by Jinja's autoescape; every link passes
`safe_http_url`, so `javascript:` and relative links are dropped. The HTML stays
under `HTML_BUDGET` bytes by trimming abstracts and, if that is not enough,
dropping the lowest-ranked papers.

What the reader sees is prepared here, once: LaTeX in titles, abstracts and
authors becomes Unicode (`prose.latex_to_text`), each paper's links and reason
(`PaperView.reason`), plurals and the name of the `*` topic; the text part is
wrapped at TEXT_WIDTH columns with each URL on its own line (`prose.wrap_prose`).
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import NamedTuple, Protocol, cast
from urllib.parse import quote

import jinja2
from premailer import Premailer

from digest.cache import BoundedCache
from digest.models import Paper
from digest.prose import TEXT_WIDTH, latex_to_text, link_line, wrap_prose
from digest.resources import resource_dir
from digest.sources.records import one_line, safe_http_url

HTML_BUDGET = 100_000  # bytes; Gmail clips messages at about 102 KB
PERSONAL_ROOM = 1_000  # bytes kept for what `personalize` substitutes (address, links)
ABSTRACT_CHARS = 400
SHORT_ABSTRACT_CHARS = 180
MAX_SUBJECT = 78
AUTHORS_SHOWN = 3
SEARCH_LABEL = "Search on Hugging Face"
CARD_BATCH = 300  # paper cards inlined per premailer run when warming
VIEW_CACHE = 8192  # paper views kept by a Renderer (a card is about 2 KB)

# Per-recipient fields, rendered as these tokens and substituted by `personalize`.
PLACEHOLDERS = {
    "greeting": "PDXGREETINGXPD",
    "email": "PDXEMAILXPD",
    "topics": "PDXTOPICSXPD",
    "unsubscribe_url": "PDXUNSUBSCRIBEXPD",
    "manage_url": "PDXMANAGEXPD",
    "view_url": "PDXVIEWXPD",
}
# With no name there is no greeting at all: its paragraph (HTML) or line (text) goes.
_NO_GREETING_HTML = re.compile(rf"<p\b[^>]*>{PLACEHOLDERS['greeting']}</p>\s*")
# Stands for each paper's text card while the text part is rendered (see Renderer._text_parts).
_CARD_MARK = "\x00"


class Part(NamedTuple):
    """A piece of a rendered body. A shared piece (a paper card, a topic heading, the
    unchanging lines of the frame) is the same in many digests, so worth encoding once
    per run; the others are this digest's own and may hold the recipient's placeholders."""

    text: str
    shared: bool


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


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Link:
    label: str
    url: str


class Reason(str):
    """Why a paper is in the digest: the topic, the words that matched and, for a
    trending paper, its upvote gain. As a string it is the plain text; Jinja's
    autoescape renders `__html__`, where the matched words are highlighted."""

    html_text: str

    def __new__(cls, topic: str, words: tuple[str, ...], gain: str = "") -> Reason:
        plain: list[str] = []
        marked: list[str] = []
        if topic:
            listed = ", ".join(f"“{word}”" for word in words)
            plain.append(f"Matched {topic}" + (f": {listed}" if words else ""))
            highlighted = ", ".join(f"<b>{html.escape(word)}</b>" for word in words)
            marked.append(f"Matched {html.escape(topic)}" + (f": {highlighted}" if words else ""))
        if gain:
            plain.append(gain)
            marked.append(html.escape(gain))
        reason = super().__new__(cls, " · ".join(plain))
        reason.html_text = " · ".join(marked)
        return reason

    def __html__(self) -> str:
        return self.html_text


@dataclass(frozen=True)
class PaperView:
    title: str
    url: str | None
    kind: str
    topic: str
    matched: tuple[str, ...]
    everything: bool
    upvotes: int | None
    gain: int
    votes: str
    byline: str
    date: str
    abstract: str
    trimmed: bool
    links: tuple[Link, ...]
    period: str = "today"

    def __hash__(self) -> int:
        return self._hash  # a view keys several caches: hash its fields once

    @functools.cached_property
    def _hash(self) -> int:
        return hash(tuple(getattr(self, name.name) for name in fields(self)))

    @property
    def read_more(self) -> str | None:
        """Where the rest of a trimmed abstract is: the paper's page, never a search."""
        known = bool(self.links) and self.links[0].label != SEARCH_LABEL
        return self.url if self.trimmed and known else None

    @property
    def badge(self) -> str:
        return self.kind.upper()

    @property
    def facts(self) -> str:
        """Badge, votes, authors and date on one line, for the text part."""
        parts = [f"[{self.badge}]", self.votes, self.byline, self.date]
        return " · ".join(part for part in parts if part)

    @property
    def reason(self) -> Reason:
        """Why the paper is here: the topic and the words it matched (the everything topic
        has none) and, for a trending paper, its upvote gain."""
        gain = f"▲ +{self.gain} {self.period}" if self.kind == "trending" and self.gain else ""
        return Reason("" if self.everything else f"“{self.topic}”", self.matched, gain)


@dataclass(frozen=True)
class Section:
    title: str
    papers: tuple[PaperView, ...]
    everything: bool = False
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

    @functools.cached_property
    def date_long(self) -> str:
        return f"{self.digest_date:%A} {self.digest_date.day} {self.digest_date:%B %Y}"

    def _named_titles(self) -> list[str]:
        return [section.title for section in self.sections if not section.everything]

    @functools.cached_property
    def heading(self) -> str:
        if not self.sections:
            return f"Nothing new {self.gain_period}"
        named = self._named_titles()
        count = self.paper_count
        if not named:  # only the everything topic
            top = "top paper" if count == 1 else f"top {count} papers"
            return f"{'This week' if self.weekly else 'Today'}'s {top}"
        everything = len(named) < len(self.sections)
        tail = f" and {self.gain_period}'s top papers" if everything else ""
        return f"{plural(count, 'paper')} on {join_titles(named, 60 - len(tail))}{tail}"

    @functools.cached_property
    def paper_count(self) -> int:
        return sum(len(section.papers) for section in self.sections)

    @functools.cached_property
    def summary(self) -> str:
        parts = [f"{self.new_count} new"]
        if self.trending_count:
            parts.append(f"{self.trending_count} trending")
        if self.omitted:
            parts.append(f"{self.omitted} more left out to keep this email small")
        return ", ".join(parts)

    @functools.cached_property
    def subject(self) -> str:
        head = f"{self.brand} · {self.digest_date:%a} {self.digest_date.day} {self.digest_date:%b}"
        if not self.sections:
            return f"{head} · nothing new"
        counts = f"{self.new_count} new" if self.new_count else ""
        if self.trending_count:
            counts += (", " if counts else "") + f"{self.trending_count} trending"
        named = self._named_titles()
        if not named:
            return f"{head} · {counts}"
        if len(named) < len(self.sections):
            named.append("top papers")
        prefix = f"{head} · {counts} in "
        return prefix + join_titles(named, MAX_SUBJECT - len(prefix))

    @functools.cached_property
    def preheader(self) -> str:
        if not self.sections:
            return f"Nothing new matched your topics {self.gain_period}."
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
    names = [one_line(latex_to_text(name)) for name in paper.author_names]
    if names:
        shown = ", ".join(names[:AUTHORS_SHOWN])
        people = shown + (" et\u00a0al." if len(names) > AUTHORS_SHOWN else "")
    elif paper.author_count:
        people = plural(paper.author_count, "author")
    else:
        people = ""
    return " · ".join(part for part in (people, paper.organization or "") if part)


def everything_title(weekly: bool = False) -> str:
    """The name of the `*` topic: every paper, best first."""
    return "This week's top papers" if weekly else "Today's top papers"


def topic_title(query: str, label: str | None, weekly: bool = False) -> str:
    """How a topic is shown: its label (the query as typed), else its query; `*` is named."""
    if label:
        return one_line(label)
    return everything_title(weekly) if query == "*" else one_line(query)


def paper_links(paper: Paper) -> tuple[str, tuple[Link, ...]]:
    """Where the title links to, and every link shown under the paper.

    With an arXiv id: the Hugging Face page, the arXiv abstract and the PDF;
    always the code and project pages when known; a search for the title only
    when nothing else leads to the paper.
    """
    candidates = [
        ("Hugging Face", paper.hf_url),
        ("arXiv" if paper.arxiv_id else "Abstract", paper.abs_url),
        ("PDF", paper.pdf_url),
        ("Code", paper.github_url),
        ("Project", paper.project_url),
    ]
    links = [Link(label, safe) for label, value in candidates if (safe := safe_http_url(value))]
    if not any(link.label in ("Hugging Face", "Abstract", "arXiv") for link in links):
        links.insert(0, Link(SEARCH_LABEL, paper.search_url))
    return links[0].url, tuple(links)


def paper_title(paper: Paper) -> str:
    """The title as a reader sees it: LaTeX as text, on one line."""
    return one_line(latex_to_text(paper.title))


def paper_view(paper: Paper, item: ItemLike, abstract_chars: int, weekly: bool) -> PaperView:
    abstract, trimmed = trim_abstract(latex_to_text(paper.abstract), abstract_chars)
    votes = ""
    period = "this week" if weekly else "today"
    if item.upvotes:  # no count, or none yet: nothing to show
        votes = f"▲\u00a0{item.upvotes}" + (
            f" (+{item.upvote_gain} {period})" if item.upvote_gain > 0 else ""
        )
    url, links = paper_links(paper)
    return PaperView(
        title=paper_title(paper),
        url=url,
        kind=item.kind,
        topic=topic_title(item.topic, item.topic_label, weekly),
        matched=tuple(word for word in item.matched.split(", ") if word),
        everything=item.topic == "*" and not item.topic_label,
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
    views: Callable[[Paper, ItemLike, int, bool], PaperView] = paper_view,
) -> DigestView:
    """Group items by topic, in their order, into what the templates show.

    `more` counts, per topic query, the papers that matched beyond the caps; with a
    `base_url` their section links to the site's preview of that topic. `views`
    makes each paper's view (a caching `paper_view`, by default `paper_view`).
    """
    chosen = list(items)
    omitted = 0
    if limit is not None and len(chosen) > limit:
        omitted = len(chosen) - limit
        chosen = chosen[:limit]
    sections: dict[str, list[PaperView]] = {}
    queries: dict[str, str] = {}
    everything: set[str] = set()
    for item in chosen:
        view = views(papers[item.paper_id], item, abstract_chars, weekly)
        sections.setdefault(view.topic, []).append(view)
        queries.setdefault(view.topic, item.topic)
        if view.everything:
            everything.add(view.topic)

    def section(title: str, views: list[PaperView]) -> Section:
        query = queries[title]
        extra = (more or {}).get(query, 0)
        url = f"{base_url.rstrip('/')}/preview?topic={quote(query)}" if base_url else None
        return Section(
            title, tuple(views), title in everything, extra, safe_http_url(url) if extra else None
        )

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
    """Jinja with StrictUndefined; autoescape for HTML. An override folder is searched first.

    Text templates wrap prose with the `wrap(indent, first)` filter and write
    links with `link_line(label, url)`, keeping lines within TEXT_WIDTH.
    """
    folders = [str(override)] if override else []
    folders.append(str(resource_dir("templates")))
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        autoescape=html_mode,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["wrap"] = wrap_prose
    environment.globals["link_line"] = link_line
    return environment


@dataclass(frozen=True)
class Recipient:
    """The per-recipient parts of a digest email."""

    email: str
    topics: Sequence[str]
    unsubscribe_url: str
    manage_url: str
    view_url: str
    name: str | None = None

    def values(self) -> dict[str, str]:
        name = one_line(self.name or "")
        return {
            "greeting": f"Hello {name}," if name else "",
            "email": one_line(self.email),
            "topics": one_line(join_titles(list(self.topics), 300)),
            "unsubscribe_url": safe_http_url(self.unsubscribe_url) or "",
            "manage_url": safe_http_url(self.manage_url) or "",
            "view_url": safe_http_url(self.view_url) or "",
        }


@dataclass(frozen=True)
class RenderedDigest:
    """The email for one distinct content, with placeholders for the recipient.

    `html_parts` and `text_parts`, when known, are the pieces `html` and `text` are
    made of (see `Part`), so a message can be assembled from pieces encoded once.
    """

    subject: str
    html: str
    text: str
    view: DigestView = field(repr=False)
    html_parts: tuple[Part, ...] | None = field(default=None, repr=False)
    text_parts: tuple[Part, ...] | None = field(default=None, repr=False)

    @functools.cached_property
    def _text_lines(self) -> tuple[list[str], list[int]]:
        """The text part's lines, and which of them hold a placeholder."""
        lines = self.text.split("\n")
        return lines, [i for i, line in enumerate(lines) if has_placeholder(line)]

    def personalize(self, recipient: Recipient) -> tuple[str, str]:
        """(html, text) for one recipient: plain substitutions, no Jinja, no premailer.

        A text line that grows past TEXT_WIDTH with the recipient's values is
        wrapped again; with no name, the greeting's paragraph and line go.
        """
        values = recipient.values()
        lines, personal = self._text_lines
        return personalize_html(self.html, values), _personal_lines(list(lines), personal, values)


def has_placeholder(text: str) -> bool:
    """Whether `text` holds a recipient's placeholder."""
    return "PDX" in text and any(token in text for token in PLACEHOLDERS.values())


def personalize_html(markup: str, values: Mapping[str, str]) -> str:
    """`markup` with the recipient's `values` (Recipient.values) in place of the
    placeholders, escaped; with no name, the greeting's paragraph goes."""
    if not values["greeting"]:
        markup = _NO_GREETING_HTML.sub("", markup, count=1)
    for name, value in values.items():
        markup = markup.replace(PLACEHOLDERS[name], html.escape(value, quote=True))
    return markup


def personalize_text(text: str, values: Mapping[str, str]) -> str:
    """The text part (or whole lines of it) with the recipient's `values`; a line growing
    past TEXT_WIDTH is wrapped again; with no name, the greeting's line and the blank
    line after it go."""
    lines = text.split("\n")
    return _personal_lines(
        lines, [i for i, line in enumerate(lines) if has_placeholder(line)], values
    )


def _personal_lines(lines: list[str], personal: list[int], values: Mapping[str, str]) -> str:
    dropped: set[int] = set()
    for index in personal:
        line = lines[index]
        if line == PLACEHOLDERS["greeting"] and not values["greeting"]:
            dropped.add(index)
            if lines[index + 1 : index + 2] == [""]:
                dropped.add(index + 1)  # and the blank line after it
            continue
        for name, value in values.items():
            line = line.replace(PLACEHOLDERS[name], value)
        if len(line) > TEXT_WIDTH:
            indent = line[: len(line) - len(line.lstrip())]
            line = wrap_prose(line, indent)
        lines[index] = line
    if not dropped:
        return "\n".join(lines)
    return "\n".join(line for index, line in enumerate(lines) if index not in dropped)


@dataclass(frozen=True)
class Notice:
    """A one-off email to one person (confirm your subscription...): text and one action."""

    subject: str
    heading: str
    paragraphs: tuple[str, ...]
    action_label: str = ""
    action_url: str = ""
    footnote: str = ""
    site_name: str = ""
    postal_address: str = ""


def inline_css(markup: str) -> str:
    """Inline the CSS of `markup` (premailer) and drop its <style> blocks.

    The layout never depends on a <style> block, which Gmail's mobile webmail
    and others remove; progressive enhancements (dark mode, phones) live in a
    `<style data-premailer="ignore">` block, which stays as written.
    """
    return str(
        Premailer(
            markup,
            keep_style_tags=False,
            strip_important=False,
            remove_classes=False,
            cssutils_logging_level="CRITICAL",
            disable_validation=True,
        ).transform()
    )


# What a digest's HTML shows besides its papers, as tokens that the inlined shell keeps
# and `HtmlParts` substitutes (escaped as the inliner writes text) per digest.
SHELL_TOKENS = {
    name: f"PDX{name.upper().replace('_', '')}XPD"
    for name in (
        "subject",
        "preheader",
        "brand",
        "heading",
        "date_long",
        "summary",
        "frequency_word",
        "site_name",
        "postal_address",
    )
}
_SECTION = "PDXSECTIONXPD"
_MORE = "PDXMOREXPD"
_MORE_URL = "https://PDXMOREURLXPD.invalid/"
# A "more matched" URL is substituted as is only when escaping cannot change it.
_PLAIN_URL = re.compile(r"[A-Za-z0-9%/:._~?=+-]*")


@dataclass(frozen=True)
class _ShellSection:
    title: str
    papers: tuple[PaperView, ...]
    more: str
    more_url: str | None


@dataclass(frozen=True)
class _ShellView:
    """Quacks like a DigestView for digest.html.j2, with tokens for its text."""

    sections: tuple[_ShellSection, ...]
    postal_address: str
    gain_period: str = "today"  # shown only by a digest with no sections: never assembled
    subject: str = SHELL_TOKENS["subject"]
    preheader: str = SHELL_TOKENS["preheader"]
    brand: str = SHELL_TOKENS["brand"]
    heading: str = SHELL_TOKENS["heading"]
    date_long: str = SHELL_TOKENS["date_long"]
    summary: str = SHELL_TOKENS["summary"]
    frequency_word: str = SHELL_TOKENS["frequency_word"]
    site_name: str = SHELL_TOKENS["site_name"]


@dataclass(frozen=True)
class _Shell:
    """The inlined digest around its sections, cut at the rows. Each row keeps the
    white space that follows it; head and tail are in runs of whole lines (`_blocks`)."""

    head: tuple[Part, ...]
    topic_row: str
    more_row: str
    tail: tuple[Part, ...]


def _text(value: str) -> str:
    """`value` as the inliner (lxml) writes text: only &, < and > escaped."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _rows(document: str, start: int) -> Iterator[tuple[int, int]]:
    """The spans of the table rows (no nested rows) from `start` on."""
    while (begin := document.find("<tr", start)) >= 0:
        start = document.index("</tr>", begin) + len("</tr>")
        yield begin, start


_TOKENS = (*SHELL_TOKENS.values(), *PLACEHOLDERS.values())


def _blocks(text: str) -> tuple[Part, ...]:
    """`text` cut into runs of whole lines: shared where no token is, the digest's own
    where one is. A line starting with white space stays with the own lines before it,
    so that dropping the greeting's paragraph (and the white space after it) happens
    within one piece."""
    blocks: list[tuple[list[str], bool]] = []
    lines = text.split("\n")
    for number, line in enumerate(lines):
        line += "\n" if number < len(lines) - 1 else ""
        if not line:
            continue
        own = any(token in line for token in _TOKENS) or bool(
            blocks and not blocks[-1][1] and line[:1].isspace()
        )
        if blocks and blocks[-1][1] == (not own):
            blocks[-1][0].append(line)
        else:
            blocks.append(([line], not own))
    return tuple(Part("".join(lines), shared) for lines, shared in blocks)


class HtmlParts:
    """The HTML of a digest assembled from parts inlined once per run.

    Premailer runs on a document made of the shell (head, intro, a topic row, a
    "more matched" row, footer: tokens for their text) and the paper cards not seen
    yet, so usually once per run and then only for digests bringing new cards. A
    digest is the shell with its text substituted around its cached cards. The
    result is the bytes `inline_css` gives for the whole digest (a test compares
    them): CSS inlining is local to each element, and the rows are cut where the
    template separates them (by the same white space everywhere).
    """

    def __init__(self, environment: jinja2.Environment, cards: int = 4096) -> None:
        self._environment = environment
        self._shells: dict[tuple[bool, bool], _Shell] = {}  # (postal address, linked "more")
        self.cards: BoundedCache[PaperView, str] = BoundedCache(cards)  # with the separator
        self.inlined = 0  # premailer runs
        self.usable = True  # False if the rows are not separated alike: render whole

    def _inline(self, papers: Sequence[PaperView], postal: bool, linked: bool) -> None:
        """Inline a document of the shell and these cards; keep its parts."""
        self.inlined += 1
        address = SHELL_TOKENS["postal_address"] if postal else ""
        section = _ShellSection(_SECTION, tuple(papers), _MORE, _MORE_URL if linked else None)
        context = {"digest": _ShellView((section,), address), **PLACEHOLDERS}
        document = inline_css(self._environment.get_template("digest.html.j2").render(context))
        first = document.rfind("<tr", 0, document.index(_SECTION))
        # The topic row, the cards, the "more" row and the footer's row.
        rows = list(_rows(document, first))[: len(papers) + 3]
        separators = {document[end : rows[n + 1][0]] for n, (_, end) in enumerate(rows[:-1])}
        if len(separators) != 1:
            self.usable = False
            return
        # Each row up to the next one, so with the separator after it.
        spans = [document[begin : rows[n + 1][0]] for n, (begin, _) in enumerate(rows[:-1])]
        for paper, card in zip(papers, spans[1:-1], strict=True):
            self.cards.put(paper, card)
        self._shells[postal, linked] = _Shell(
            head=_blocks(document[:first]),
            topic_row=spans[0],
            more_row=spans[-1],
            tail=_blocks(document[rows[-1][0] :]),
        )

    def add_cards(self, papers: Iterable[PaperView], postal: bool) -> int:
        """Inline the cards of `papers` not cached yet, `CARD_BATCH` per premailer run, as
        many as the cache holds; how many were inlined."""
        missing = list(dict.fromkeys(p for p in papers if self.cards.lookup(p) is None))
        missing = missing[: self.cards.size]
        for start in range(0, len(missing), CARD_BATCH):
            self._inline(missing[start : start + CARD_BATCH], postal, True)
        return len(missing)

    def html(self, view: DigestView) -> str | None:
        """The inlined HTML of `view`; None when only a whole render can make it."""
        parts = self.assemble(view)
        return None if parts is None else "".join(part.text for part in parts)

    def assemble(self, view: DigestView) -> tuple[Part, ...] | None:
        """The pieces of the inlined HTML of `view`: cached cards and rows, and its own
        text; None when only a whole render can make it."""
        if not view.sections or view.omitted or not self.usable:
            return None
        if any(s.more_url and not _PLAIN_URL.fullmatch(s.more_url) for s in view.sections):
            return None
        postal = bool(view.postal_address)
        cards: dict[PaperView, str] = {}
        missing: dict[PaperView, None] = {}
        for section in view.sections:
            for paper in section.papers:
                if (card := self.cards.lookup(paper)) is not None:
                    cards[paper] = card
                else:
                    missing[paper] = None
        if len(missing) > self.cards.size:
            return None
        # The shells this digest needs: its "more" rows' kinds, or any for head and tail.
        wanted = {(postal, bool(s.more_url)) for s in view.sections if s.more}
        if not wanted and (postal, False) not in self._shells:
            wanted = {(postal, True)}
        to_make = sorted(wanted - set(self._shells)) or ([(postal, True)] if missing else [])
        for number, key in enumerate(to_make):
            self._inline(list(missing) if number == 0 else [], *key)
        if not self.usable:
            return None
        for paper in missing:
            cards[paper] = self.cards.get(paper, str)
        shell = self._shells.get((postal, True)) or self._shells[postal, False]
        parts = self._fill(shell.head, view)
        for section in view.sections:
            current = self._shells[postal, bool(section.more_url)] if section.more else shell
            parts.append(Part(current.topic_row.replace(_SECTION, _text(section.title)), True))
            parts.extend(Part(cards[paper], True) for paper in section.papers)
            if section.more:
                row = current.more_row.replace(_MORE, str(section.more))
                parts.append(Part(row.replace(_MORE_URL, section.more_url or ""), True))
        parts.extend(self._fill(shell.tail, view))
        return tuple(parts)

    @staticmethod
    def _fill(parts: tuple[Part, ...], view: DigestView) -> list[Part]:
        filled: list[Part] = []
        for text, shared in parts:
            if not shared:
                for name, token in SHELL_TOKENS.items():
                    if token in text:
                        text = text.replace(token, _text(getattr(view, name)))
            filled.append(Part(text, shared))
        return filled


# How the text frame marks what the template wraps (`TextParts`): indent, first, text.
_WRAPPED = re.compile("\x01([^\x02]*)\x02([^\x02]*)\x02([^\x03]*)\x03")
_MARKS = re.compile("[\x00-\x04]")


def _marked_wrap(text: str, indent: str = "", first: str | None = None) -> str:
    """The `wrap` filter while the text frame is rendered: marks the text to wrap once
    its tokens are filled."""
    return "\x01" + indent + "\x02" + ("\x04" if first is None else first) + f"\x02{text}\x03"


def _wrap_marked(match: re.Match[str]) -> str:
    indent, first, text = match.groups()
    return wrap_prose(text, indent, None if first == "\x04" else first)


@dataclass(frozen=True)
class _TextShell:
    """The text frame cut where its sections and cards go."""

    head: str
    title: str  # a section's start, up to its first card
    gap: str  # between two cards
    end: str  # a section's end, after its last card
    tail: str


class TextParts:
    """The text part of a digest (bundled templates) assembled from a frame rendered once
    per run around its text cards, instead of running the template per digest.

    The frame is digest.txt.j2 rendered with tokens for the digest's text, a mark for
    each card, and marks where it wraps text; it is cut by comparing renderings with
    one and two sections and cards. A test compares the result with the template's.
    """

    def __init__(self, paper_text: Callable[[PaperView], str]) -> None:
        environment = template_environment(None, html_mode=False)
        environment.filters["wrap"] = _marked_wrap
        self._template = environment.get_template("digest.txt.j2")
        self._paper_text = paper_text
        self._shells: dict[tuple[bool, str], _TextShell | None] = {}

    def _render(self, postal: bool, more: str, sections: int, cards: int) -> str:
        url = _MORE_URL if more == "linked" else None
        # The frame's papers are only counted: `paper_text` stands for each with a mark.
        shown: tuple[PaperView, ...] = (cast(PaperView, None),) * cards
        section = _ShellSection(_SECTION, shown, _MORE if more else "", url)
        address = SHELL_TOKENS["postal_address"] if postal else ""
        view = _ShellView((section,) * sections, address)
        context = {"digest": view, "paper_text": lambda _: _CARD_MARK, **PLACEHOLDERS}
        return self._template.render(context)

    def _shell(self, postal: bool, more: str) -> _TextShell | None:
        if (postal, more) not in self._shells:
            one = self._render(postal, more, 1, 1)
            cards = self._render(postal, more, 1, 2)
            sections = self._render(postal, more, 2, 1)
            start = one.rfind("\n", 0, one.index(_SECTION)) + 1
            first = sections.index(_CARD_MARK)
            second = sections.index(_SECTION, first)
            second = sections.rfind("\n", 0, second) + 1
            card = one.index(_CARD_MARK)
            mark, next_mark = cards.index(_CARD_MARK), cards.rindex(_CARD_MARK)
            end = sections[first + 1 : second]
            shell = _TextShell(
                head=one[:start],
                title=one[start:card],
                gap=cards[mark + 1 : next_mark],
                end=end,
                tail=one[card + 1 + len(end) :],
            )
            unit = shell.title + _CARD_MARK + shell.end
            two_cards = shell.title + _CARD_MARK + shell.gap + _CARD_MARK + shell.end
            cut_alike = (one, cards, sections) == (
                shell.head + unit + shell.tail,
                shell.head + two_cards + shell.tail,
                shell.head + unit + unit + shell.tail,
            )
            self._shells[postal, more] = shell if cut_alike else None
        return self._shells[postal, more]

    def assemble(self, view: DigestView) -> tuple[Part, ...] | None:
        """The pieces of the text part of `view`; None when only the template can make it."""
        if not view.sections or any(_MARKS.search(s.title) for s in view.sections):
            return None
        postal = bool(view.postal_address)
        parts: list[Part] = []
        shell: _TextShell | None = None
        for section in view.sections:
            more = ("linked" if section.more_url else "plain") if section.more else ""
            if (shell := self._shell(postal, more)) is None:
                return None
            if not parts:
                if (head := self._fill(shell.head, view)) is None:
                    return None
                parts.append(Part(head, False))
            parts.append(Part(shell.title.replace(_SECTION, section.title), True))
            for number, paper in enumerate(section.papers):
                if number:
                    parts.append(Part(shell.gap, True))
                parts.append(Part(self._paper_text(paper), True))
            end = shell.end.replace(_MORE, str(section.more))
            parts.append(Part(end.replace(_MORE_URL, section.more_url or ""), True))
        assert shell is not None
        if (tail := self._fill(shell.tail, view)) is None:
            return None
        parts.append(Part(tail, False))
        return tuple(parts)

    @staticmethod
    def _fill(text: str, view: DigestView) -> str | None:
        """`text` with the digest's values in place of its tokens, wrapped where the
        template wraps; None if a value holds one of the frame's marks."""
        for name, token in SHELL_TOKENS.items():
            if token in text:
                value = getattr(view, name)
                if _MARKS.search(value):
                    return None
                text = text.replace(token, value)
        return _WRAPPED.sub(_wrap_marked, text) if "\x01" in text else text


@dataclass
class Renderer:
    """Renders digests with the bundled templates, or an operator's override folder."""

    templates: Path | None = None
    site_name: str = "papers digest"
    postal_address: str = ""
    budget: int = HTML_BUDGET
    _html: jinja2.Environment = field(init=False, repr=False)
    _text: jinja2.Environment = field(init=False, repr=False)
    # The bundled templates' digests are assembled from parts inlined once (HtmlParts);
    # an operator's templates are rendered and inlined whole.
    parts: HtmlParts | None = field(init=False, repr=False)
    text_parts: TextParts | None = field(init=False, repr=False)
    _views: BoundedCache[Hashable, PaperView] = field(init=False, repr=False)
    _paper_text: Callable[[PaperView], str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._html = template_environment(self.templates, html_mode=True)
        self._text = template_environment(self.templates, html_mode=False)
        self.parts = HtmlParts(self._html) if self.templates is None else None
        self._views = BoundedCache(VIEW_CACHE)
        # digest.txt.j2 shows each paper through paper.txt.j2, rendered once per paper view.
        texts: BoundedCache[PaperView, str] = BoundedCache(VIEW_CACHE)
        paper_template = self._text.get_template("paper.txt.j2")
        self._paper_text = lambda paper: texts.get(
            paper, lambda: paper_template.render(paper=paper)
        )
        self._text.globals["paper_text"] = self._paper_text
        self.text_parts = TextParts(self._paper_text) if self.templates is None else None

    def paper_view(
        self, paper: Paper, item: ItemLike, abstract_chars: int, weekly: bool
    ) -> PaperView:
        """`paper_view`, made once per paper and way of showing it."""
        key = (
            paper.id,
            paper.updated_at,
            item.kind,
            item.topic,
            item.topic_label,
            item.upvotes,
            item.upvote_gain,
            item.matched,
            abstract_chars,
            weekly,
        )
        return self._views.get(key, lambda: paper_view(paper, item, abstract_chars, weekly))

    def warm(
        self, digests: Iterable[tuple[Sequence[ItemLike], bool]], papers: dict[int, Paper]
    ) -> int:
        """Inline the cards these (items, weekly) digests show, in few premailer runs, and
        render their text cards; how many cards were inlined. Rendering them afterwards
        inlines nothing more."""
        views = list(
            dict.fromkeys(
                self.paper_view(papers[item.paper_id], item, ABSTRACT_CHARS, weekly)
                for items, weekly in digests
                for item in items
                if item.paper_id in papers
            )
        )
        if self.parts is None:  # an operator's templates: each digest is rendered whole
            return 0
        for view in views:
            self._paper_text(view)
        return self.parts.add_cards(views, bool(one_line(self.postal_address)))

    def _render(self, view: DigestView) -> RenderedDigest:
        context = {"digest": view, **PLACEHOLDERS}
        html_parts = self.parts.assemble(view) if self.parts is not None else None
        if html_parts is None:
            inlined = inline_css(self._html.get_template("digest.html.j2").render(context))
        else:
            inlined = "".join(part.text for part in html_parts)
        text_parts = self.text_parts.assemble(view) if self.text_parts is not None else None
        if text_parts is None:
            text_parts = self._text_parts(context)
        return RenderedDigest(
            subject=view.subject,
            html=inlined,
            text="".join(part.text for part in text_parts),
            view=view,
            html_parts=html_parts,
            text_parts=text_parts,
        )

    def _text_parts(self, context: dict[str, object]) -> tuple[Part, ...]:
        """The text part in pieces: each paper's card (shared) and the text around them."""
        cards: list[str] = []

        def card(paper: PaperView) -> str:
            cards.append(self._paper_text(paper))
            return _CARD_MARK

        template = self._text.get_template("digest.txt.j2")
        pieces = template.render(context, paper_text=card).split(_CARD_MARK)
        if len(pieces) != len(cards) + 1:  # the mark was in the text itself
            return (Part(template.render(context), False),)
        # What lies between the cards is shared too when it holds no placeholder (a blank
        # line, a topic heading): only the lines with the recipient's values are not.
        parts = [Part(pieces[0], not has_placeholder(pieces[0]))]
        for text, around in zip(cards, pieces[1:], strict=True):
            parts += (Part(text, True), Part(around, not has_placeholder(around)))
        return tuple(parts)

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
                views=self.paper_view,
            )
            rendered = self._render(view)
            if len(rendered.html.encode("utf-8")) <= self.budget - PERSONAL_ROOM:
                break
        return rendered

    def render_notice(self, notice: Notice) -> tuple[str, str]:
        """(html, text) of a one-off email such as a subscription confirmation."""
        notice = replace(
            notice,
            site_name=one_line(self.site_name),
            postal_address=one_line(self.postal_address),
            action_url=safe_http_url(notice.action_url) or "",
        )
        html_part = inline_css(self._html.get_template("notice.html.j2").render(notice=notice))
        text = self._text.get_template("notice.txt.j2").render(notice=notice)
        return html_part, text
