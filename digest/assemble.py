"""Assembly: the digests of the bundled templates made from parts inlined and rendered
once per run, instead of running Jinja and premailer per digest; `render.Renderer`
uses it for every digest it can assemble this way.

A digest is assembled from what is shared, inlined and rendered once per run
(`HtmlParts`: each paper card and the frame around the topics; `TextParts`: the
text frame around each paper's text card), and keeps its pieces (`Part`) so that a
message can be assembled from pieces encoded once. Tests compare the assembled
digests with the whole render.

The frames are rendered with the two tools every rendering uses, which are therefore
here: the templates' Jinja environment (`template_environment`) and the CSS
inliner (`inline_css`, premailer).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

import jinja2
from premailer import Premailer

from digest.cache import BoundedCache
from digest.prose import link_line, wrap_prose
from digest.resources import resource_dir
from digest.views import PLACEHOLDERS, DigestView, PaperView

CARD_BATCH = 300  # paper cards inlined per premailer run when warming
# Stands for each paper's text card while the text part is rendered (see TextParts and
# render.Renderer._text_parts).
CARD_MARK = "\x00"


class Part(NamedTuple):
    """A piece of a rendered body. A shared piece (a paper card, a topic heading, the
    unchanging lines of the frame) is the same in many digests, so worth encoding once
    per run; the others are this digest's own and may hold the recipient's placeholders."""

    text: str
    shared: bool


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
        context = {"digest": view, "paper_text": lambda _: CARD_MARK, **PLACEHOLDERS}
        return self._template.render(context)

    def _shell(self, postal: bool, more: str) -> _TextShell | None:
        if (postal, more) not in self._shells:
            one = self._render(postal, more, 1, 1)
            cards = self._render(postal, more, 1, 2)
            sections = self._render(postal, more, 2, 1)
            start = one.rfind("\n", 0, one.index(_SECTION)) + 1
            first = sections.index(CARD_MARK)
            second = sections.index(_SECTION, first)
            second = sections.rfind("\n", 0, second) + 1
            card = one.index(CARD_MARK)
            mark, next_mark = cards.index(CARD_MARK), cards.rindex(CARD_MARK)
            end = sections[first + 1 : second]
            shell = _TextShell(
                head=one[:start],
                title=one[start:card],
                gap=cards[mark + 1 : next_mark],
                end=end,
                tail=one[card + 1 + len(end) :],
            )
            unit = shell.title + CARD_MARK + shell.end
            two_cards = shell.title + CARD_MARK + shell.gap + CARD_MARK + shell.end
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
