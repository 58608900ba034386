"""Detect an input's format from its content and hand it to the right parser."""

from __future__ import annotations

import codecs
import json
import re
import xml.sax
from datetime import date, datetime
from typing import Any

import feedparser

from digest.sources.arxiv import parse_arxiv_feed
from digest.sources.hf_api import parse_hf_api
from digest.sources.hf_page import looks_like_hf_page, parse_hf_page
from digest.sources.records import InputError, ParseResult, one_line

KNOWN = "an HF Daily Papers page, HF daily_papers JSON, arXiv API Atom or an arXiv listing feed"


def _decode(data: bytes) -> str:
    if b"\x00" in data[:65536]:
        raise InputError("binary data, not a text page or feed")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"binary data or not UTF-8 (byte {exc.start})") from None


# A character reference to a lone surrogate (&#xD800;, &#55296;): feedparser raises on
# one, and no database stores one; dropped, as the text normaliser drops them.
_SURROGATE_REFERENCE = re.compile(rb"&#(?:[xX]0*[dD][89a-fA-F][0-9a-fA-F]{2}|0*5[5-7]\d{3});")
# A DTD may declare entities (billion laughs, external entities): no feed needs one.
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def _surrogate_reference(match: re.Match[bytes]) -> bytes:
    text = match.group().decode("ascii")
    number = int(text[3:-1], 16) if text[2] in "xX" else int(text[2:-1])
    return b"" if 0xD800 <= number <= 0xDFFF else match.group()


def _parse_xml(data: bytes, today: date) -> ParseResult:
    # The whole input, not its first bytes: a long comment may come before the DTD.
    if _DTD.search(data) or (b"\x00" in data and _DTD.search(data.replace(b"\x00", b""))):
        raise InputError("XML with a DTD or entity declarations is not allowed")
    data = _SURROGATE_REFERENCE.sub(_surrogate_reference, data)
    try:
        feed: Any = feedparser.parse(data)
    except Exception as exc:  # feedparser on hostile XML: this input's error, not a crash
        reason = one_line(f"{type(exc).__name__}: {exc}")
        raise InputError(f"feed parser failed: {reason}") from None
    error = feed.get("bozo_exception")
    if feed.get("bozo") and isinstance(error, xml.sax.SAXException):
        raise InputError(f"malformed or truncated XML: {error.getMessage()}")
    if not feed.get("version") and not feed.entries:
        raise InputError(f"XML but not a feed; expected {KNOWN}")
    return parse_arxiv_feed(feed, today)


def _parse_json(text: str, today: date, lazy: bool) -> ParseResult:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        # Some of json's messages end in "at" ("Invalid control character at").
        message = exc.msg.removesuffix(" at")
        raise InputError(
            f"truncated or invalid JSON: {message} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InputError("JSON nested too deeply") from None
    except ValueError as exc:  # e.g. a number with more digits than Python converts
        raise InputError(f"invalid JSON: {one_line(str(exc))}") from None
    return parse_hf_api(document, today, lazy=lazy)


def parse_input(data: bytes, as_of: datetime, *, lazy: bool = False) -> ParseResult:
    """Parse one whole input; raise InputError if it cannot be read at all.

    `lazy`: formats that support it leave their entries unparsed (`ParseResult.raw`).
    """
    if not data.strip():
        raise InputError("empty file")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-16 (byte {exc.start})") from None
        if text.lstrip("\ufeff \t\r\n").startswith("<"):
            return _parse_xml(data, as_of.date())  # feedparser reads the byte order mark
    else:
        if data.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"<"):
            return _parse_xml(data, as_of.date())
        text = _decode(data)
    text = text.removeprefix("\ufeff")
    if text.lstrip()[:1] in ("[", "{"):
        return _parse_json(text, as_of.date(), lazy)
    if looks_like_hf_page(text):
        return parse_hf_page(text, as_of.date())
    raise InputError(f"unknown format; expected {KNOWN}")
