"""Render stage: a digest's items become an HTML email (CSS inlined by premailer) and a
plain-text part carrying the same content.

`Renderer.render` makes what the digest shows (`views.build_view`) and produces a
`RenderedDigest` whose per-recipient parts (greeting, email, topics, unsubscribe,
manage and view-in-browser links) are placeholder tokens; `personalize` then
substitutes escaped values into a copy for each recipient without running Jinja or
premailer again. With the bundled templates a digest is assembled from parts inlined
once per run (`assemble.HtmlParts`, `assemble.TextParts`); an operator's templates
are rendered and inlined whole. `Renderer.render_notice` renders one-off emails
(`Notice`).

Every string from a feed is escaped by Jinja's autoescape. The HTML stays
under `HTML_BUDGET` bytes by trimming abstracts and, if that is not enough,
dropping the lowest-ranked papers. The text part is wrapped at TEXT_WIDTH columns
with each URL on its own line (`prose.wrap_prose`); a line that a recipient's
values make longer is wrapped again.

Imports go one way: `views` (what a digest shows) <- `assemble` <- `render`.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import jinja2

from digest.assemble import CARD_MARK, HtmlParts, Part, TextParts, inline_css, template_environment
from digest.cache import BoundedCache
from digest.models import Paper
from digest.prose import TEXT_WIDTH, wrap_prose
from digest.sources.records import one_line
from digest.urls import safe_http_url
from digest.views import (
    ABSTRACT_CHARS,
    PLACEHOLDERS,
    DigestView,
    ItemLike,
    PaperView,
    Recipient,
    build_view,
    has_placeholder,
    paper_view,
)

HTML_BUDGET = 100_000  # bytes; Gmail clips messages at about 102 KB
PERSONAL_ROOM = 1_000  # bytes kept for what `personalize` substitutes (address, links)
SHORT_ABSTRACT_CHARS = 180
VIEW_CACHE = 8192  # paper views kept by a Renderer (a card is about 2 KB)

# With no name there is no greeting at all: its paragraph (HTML) or line (text) goes.
_NO_GREETING_HTML = re.compile(rf"<p\b[^>]*>{PLACEHOLDERS['greeting']}</p>\s*")


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
        self, paper: Paper, item: ItemLike, abstract_chars: int, weekly: bool, base_url: str = ""
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
            base_url,
        )
        return self._views.get(
            key, lambda: paper_view(paper, item, abstract_chars, weekly, base_url)
        )

    def warm(
        self,
        digests: Iterable[tuple[Sequence[ItemLike], bool]],
        papers: dict[int, Paper],
        base_url: str = "",
    ) -> int:
        """Inline the cards these (items, weekly) digests show, in few premailer runs, and
        render their text cards; how many cards were inlined. Rendering them afterwards
        inlines nothing more."""
        views = list(
            dict.fromkeys(
                self.paper_view(papers[item.paper_id], item, ABSTRACT_CHARS, weekly, base_url)
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
            return CARD_MARK

        template = self._text.get_template("digest.txt.j2")
        pieces = template.render(context, paper_text=card).split(CARD_MARK)
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
        liked: Mapping[str, str] | None = None,
    ) -> RenderedDigest:
        """Render once; trim abstracts, then drop the last papers, until under budget.

        `more` and `base_url` make each topic's "N more matched" line and link, and each
        paper's "More like this" link; `liked` names like:ID topics (`views.liked_titles`).
        """
        views = functools.partial(self.paper_view, base_url=base_url or "")
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
                views=views,
                liked=liked,
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
