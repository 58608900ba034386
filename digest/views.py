"""What a digest shows, prepared once and shared by every recipient: a digest's items
grouped by topic (`build_view`) into a `DigestView` of `Section`s of `PaperView`s, the
objects the email templates (`render.Renderer`) and the web front's pages show.

What the reader sees is prepared here, once: LaTeX in titles, abstracts and
authors becomes Unicode (`prose.latex_to_text`), each paper's links and reason
(`PaperView.reason`), plurals, the subject line and the name of the `*` topic;
abstracts are trimmed at a sentence boundary (`trim_abstract`). Every link passes
`digest.urls.safe_http_url`, so `javascript:` and relative links are dropped.

A recipient's own values (`Recipient`) stand in a rendered digest as the tokens of
`PLACEHOLDERS` until `render` substitutes them (`has_placeholder` finds them).
Nothing here runs Jinja or premailer.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date
from typing import Protocol
from urllib.parse import quote

from sqlalchemy.orm import Session, object_session

from digest import db
from digest.models import Paper, Subscriber
from digest.prose import latex_to_text
from digest.query import paper_reference
from digest.sources.records import one_line
from digest.urls import safe_http_url

ABSTRACT_CHARS = 400
MAX_SUBJECT = 78
AUTHORS_SHOWN = 3
SEARCH_LABEL = "Search on Hugging Face"
LIKE_LABEL = "More like this"
LIKE_TITLE_CHARS = 50  # of the paper's title in a like:ID topic's name
LIKE_PREFIX = "papers like "  # how a like:ID topic's name begins ('papers like “<title>”')

# Per-recipient fields, rendered as these tokens and substituted by `personalize`.
PLACEHOLDERS = {
    "greeting": "PDXGREETINGXPD",
    "email": "PDXEMAILXPD",
    "topics": "PDXTOPICSXPD",
    "unsubscribe_url": "PDXUNSUBSCRIBEXPD",
    "manage_url": "PDXMANAGEXPD",
    "view_url": "PDXVIEWXPD",
}

_LIKE = re.compile(r"\blike:(\S+)", re.IGNORECASE)
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


DOUBLE_QUOTES = frozenset('"“”„«»')


def quoted(text: str) -> str:
    """`text` in typographic double quotes, as the emails and the site quote topics, titles
    and words; as it is when it holds double quotes of its own (a phrase query, a like:ID
    topic's 'papers like “<title>”'), which set it off already: quotes never nest."""
    return text if DOUBLE_QUOTES.intersection(text) else f"“{text}”"


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
            listed = ", ".join(quoted(word) for word in words)
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
    like_url: str | None = None  # the site's page of papers like this one

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
        return Reason("" if self.everything else quoted(self.topic), self.matched, gain)


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
    today: date | None = None  # the reader's date, when a page shows a later day's digest

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
            if self.weekly or self.today in (None, self.digest_date):
                return f"Nothing new {self.gain_period}"
            return f"Nothing new yet for {self.digest_date:%A}"
        named = self._named_titles()
        count = self.paper_count
        if not named:  # only the everything topic
            top = "top paper" if count == 1 else f"top {count} papers"
            return f"{'This week' if self.weekly else 'Today'}'s {top}"
        everything = len(named) < len(self.sections)
        tail = f" and {self.gain_period}'s top papers" if everything else ""
        topics = join_titles(after_count(named, "on", ""), 60 - len(tail))
        return f"{plural(count, 'paper')} {topics}{tail}"

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
        noun = "paper" if self.new_count + self.trending_count == 1 else "papers"
        topics = after_count(named, "in", noun)
        if len(named) < len(self.sections):
            topics.append("top papers")
        prefix = f"{head} · {counts} "
        return prefix + join_titles(topics, MAX_SUBJECT - len(prefix))

    @functools.cached_property
    def preheader(self) -> str:
        if not self.sections:
            return f"Nothing new matched your topics {self.gain_period}."
        first = self.sections[0].papers[0].title
        return clip(f"{self.summary}: {first}", 140)


def clip(text: str, limit: int) -> str:
    """`text` within `limit` characters, cut with '…'; a quotation it ends with keeps its
    closing quote ('papers like “A long ti…”')."""
    if len(text) <= limit:
        return text
    if text.endswith("”") and "“" in text:
        return clip(text[:-1], limit - 1) + "”"
    return text[: max(0, limit - 1)].rstrip() + "…"


def after_count(titles: Sequence[str], on: str, noun: str) -> list[str]:
    """Topic names as they read after a count ("20 papers", "3 new"): behind one `on`
    ("on Diffusion, RLHF"), a like:ID topic's last, as 'like “…”' ("20 papers on RLHF,
    like “…”"). A like:ID topic says what it is already ('papers like “…”'), so when only
    such topics are named none takes `on` and the first's "papers" becomes `noun` ("" drops
    it): "3 papers like “…”", never "3 papers on papers like “…”"; and the count, which is
    every topic's, never reads as that one paper's ("20 papers like “…”, on RLHF")."""
    liked = [f"like {t.removeprefix(LIKE_PREFIX)}" for t in titles if t.startswith(LIKE_PREFIX)]
    others = [t for t in titles if not t.startswith(LIKE_PREFIX)]
    if others:
        return [f"{on} {others[0]}", *others[1:], *liked]
    return [f"{noun} {liked[0]}".lstrip(), *liked[1:]] if liked else []


def join_titles(titles: Sequence[str], limit: int) -> str:
    """'a, b, c' within `limit` characters, ending in '+N more' when some do not fit."""
    titles = [one_line(title) for title in titles]
    for shown in range(len(titles), 0, -1):
        rest = len(titles) - shown
        text = ", ".join(titles[:shown]) + (f" +{rest} more" if rest else "")
        if len(text) <= limit:
            return text
    if not titles:
        return ""
    # Not even one whole title fits: the first one cut, and how many more there are.
    more = f" +{len(titles) - 1} more" if len(titles) > 1 else ""
    return clip(titles[0], limit - len(more)) + more


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


def topic_title(
    query: str, label: str | None, weekly: bool = False, liked: Mapping[str, str] | None = None
) -> str:
    """How a topic is shown: its label (the query as typed), else its query; `*` is named;
    each like:ID of a paper in `liked` (`liked_titles`) reads 'papers like “<its title>”'."""
    if label:
        text = one_line(label)
    else:
        text = everything_title(weekly) if query == "*" else one_line(query)
    if not liked or "like:" not in text.casefold():
        return text

    def named(match: re.Match[str]) -> str:
        title = liked.get(paper_reference(match.group(1)) or "")
        return f"{LIKE_PREFIX}{quoted(clip(title, LIKE_TITLE_CHARS))}" if title else match.group(0)

    return _LIKE.sub(named, text)


def liked_titles(session: Session, queries: Iterable[str]) -> dict[str, str]:
    """The titles of the papers the like:ID topics among `queries` name, by reference
    (what `topic_title` needs to name them)."""
    references = {
        reference
        for query in queries
        if "like:" in query.casefold()
        for match in _LIKE.finditer(query)
        if (reference := paper_reference(match.group(1)))
    }
    papers = {ref: db.find_paper_by_reference(session, ref) for ref in sorted(references)}
    return {ref: paper_title(paper) for ref, paper in papers.items() if paper is not None}


def topic_titles(
    subscriber: Subscriber, weekly: bool = False, session: Session | None = None
) -> list[str]:
    """How each of `subscriber`'s topics is shown (`topic_title`), like:ID topics named
    by their paper when there is a session to look it up (`session`, or the subscriber's)."""
    session = session or object_session(subscriber)
    queries = [topic.query for topic in subscriber.topics]
    liked = liked_titles(session, queries) if session is not None else {}
    return [topic_title(t.query, t.label, weekly, liked) for t in subscriber.topics]


def like_url(base_url: str, paper: Paper) -> str | None:
    """The site's page of papers like `paper` (by arXiv id, else its id), if there is a site."""
    if not base_url:
        return None
    reference = paper.arxiv_id or str(paper.id)
    return safe_http_url(f"{base_url.rstrip('/')}/preview?topic={quote('like:' + reference)}")


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


def paper_view(
    paper: Paper, item: ItemLike, abstract_chars: int, weekly: bool, base_url: str = ""
) -> PaperView:
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
        like_url=like_url(base_url, paper),
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
    liked: Mapping[str, str] | None = None,
) -> DigestView:
    """Group items by topic, in their order, into what the templates show.

    `more` counts, per topic query, the papers that matched beyond the caps; with a
    `base_url` their section links to the site's preview of that topic. `views`
    makes each paper's view (a caching `paper_view`, by default `paper_view`); `liked`
    names like:ID topics (`liked_titles`).
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
        if liked and "like:" in view.topic:
            view = replace(view, topic=topic_title(item.topic, item.topic_label, weekly, liked))
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


def has_placeholder(text: str) -> bool:
    """Whether `text` holds a recipient's placeholder."""
    return "PDX" in text and any(token in text for token in PLACEHOLDERS.values())
