"""Readable plain text from what feeds give: LaTeX becomes Unicode, prose is wrapped.

`latex_to_text` turns the LaTeX in titles, abstracts and author names into
Unicode (pylatexenc), converting only what is recognisably LaTeX. `wrap_prose`
and `link_line` lay out the plain-text part of an email at TEXT_WIDTH columns,
each URL whole on its own line. Pure functions: the render stage uses them.
"""

from __future__ import annotations

import functools
import re

from pylatexenc.latex2text import LatexNodes2Text

TEXT_WIDTH = 78  # columns of the plain-text part; only a URL or an address may exceed it

# LaTeX in titles and abstracts: inline math (pandoc's rule: no space inside the
# dollars, no digit right after the closing one, so "$5 and $10" is not math),
# \(...\), commands with their braced arguments, accents and escaped specials.
_LATEX = re.compile(
    r"""
    (?<![\\$])\$(?=[^\s$])(?:[^$\\]|\\.)+?(?<=[^\s\\])\$(?![\d$])
    | \\\(.+?\\\)
    | \{\\[`'"^~=.]\\?[A-Za-z]\}
    | \\[`'"^~=.](?:\{\\?[A-Za-z]\}|\\?[A-Za-z])
    | \\[A-Za-z]+\*?(?:\{(?:[^{}]|\{[^{}]*\})*\})*(?:\{\})?
    | \\[%&_\#$]
    | \\'(?![A-Za-z{\\])
    """,
    re.VERBOSE,
)
_TIE = re.compile(r"(?<=\w)~(?=[\w\\%(\[])")
_SUPERSCRIPTS = str.maketrans("0123456789+-=()n", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿ")
_SUBSCRIPTS = str.maketrans("0123456789+-=()", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎")
_SCRIPT = re.compile(r"([\^_])(?:\{([0-9+\-=()n]+)\}|([0-9n]))")
_URL = re.compile(r"https?://", re.IGNORECASE)  # a word holding a URL is never cut
_ADDRESS = re.compile(r"^\S+@\S+$")
_SPACES = re.compile(r"[ \t\n]+")  # not the no-break space: it binds "et al."


@functools.cache
def _latex_converter() -> LatexNodes2Text:
    return LatexNodes2Text(math_mode="text")


def _scripts(match: re.Match[str]) -> str:
    digits = match.group(2) or match.group(3)
    if match.group(1) == "_" and "n" in digits:
        return match.group(0)
    return digits.translate(_SUPERSCRIPTS if match.group(1) == "^" else _SUBSCRIPTS)


def _latex_fragment(match: re.Match[str]) -> str:
    source = match.group(0)
    if len(source) == 2 and source[1] in "%&_#$'":  # an escaped character: itself
        return source[1]
    if source.startswith("$"):
        source = _SCRIPT.sub(_scripts, source)
    try:
        text = str(_latex_converter().latex_to_text(source, tolerant_parsing=False))
    except Exception:  # strict parsing raises on malformed LaTeX: keep it as it was
        return match.group(0)
    if not text.strip() and re.fullmatch(r"\\[A-Za-z]+(?:\{\})?", source):
        return source.strip("\\{}")  # a bare macro with no text of its own: \LaTeX
    return text


def latex_to_text(text: str) -> str:
    """Readable Unicode for the LaTeX in a title or abstract; other text is left alone.

    Only recognisable LaTeX is converted (inline math, commands, accents), so a
    "91%" or "$5" in prose survives, and malformed LaTeX stays as it was.
    """
    if "$" not in text and "\\" not in text and "~" not in text:
        return text
    converted = _LATEX.sub(_latex_fragment, text)
    # A tie (~) right after a word is a space in LaTeX; elsewhere ("~10x") it stays.
    return _TIE.sub(" ", converted)


def wrap_prose(text: str, indent: str = "", first: str | None = None) -> str:
    """`text` wrapped at TEXT_WIDTH columns for the plain-text part.

    Lines start with `indent` (the first with `first`, if given). A URL goes
    alone on its own line and may be longer; so may an email address that does
    not fit; any other word that is too long is cut.
    """
    lines: list[str] = []
    prefix = indent if first is None else first
    line = ""

    def flush() -> None:
        nonlocal line, prefix
        if line:
            lines.append(prefix + line)
            prefix, line = indent, ""

    for word in _SPACES.split(text.strip()):
        if not word:
            continue
        if _URL.search(word):
            flush()
            line = word
            flush()
            continue
        while len(word) > TEXT_WIDTH - len(indent) and not _ADDRESS.match(word):
            flush()
            room = TEXT_WIDTH - len(prefix)
            line, word = word[:room], word[room:]
        if line and len(prefix) + len(line) + 1 + len(word) > TEXT_WIDTH:
            flush()
        line = f"{line} {word}" if line else word
    flush()
    return "\n".join(lines)


def link_line(label: str, url: str, indent: str = "  ") -> str:
    """'label:' and the URL whole on the next line: alone on its line, a mail client links
    all of it, and a reader can copy it."""
    return f"{indent}{label}:\n{indent}{url}"
