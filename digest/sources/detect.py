"""Detect an input's format from its content and hand it to the right parser."""

from __future__ import annotations

import json
import xml.sax
from datetime import datetime
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


def _parse_xml(data: bytes) -> ParseResult:
    feed: Any = feedparser.parse(data)
    error = feed.get("bozo_exception")
    if feed.get("bozo") and isinstance(error, xml.sax.SAXException):
        raise InputError(f"malformed or truncated XML: {error.getMessage()}")
    if not feed.get("version") and not feed.entries:
        raise InputError(f"XML but not a feed; expected {KNOWN}")
    return parse_arxiv_feed(feed)


def _parse_json(text: str, lazy: bool) -> ParseResult:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"truncated or invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InputError("JSON nested too deeply") from None
    except ValueError as exc:  # e.g. a number with more digits than Python converts
        raise InputError(f"invalid JSON: {one_line(str(exc))}") from None
    return parse_hf_api(document, lazy=lazy)


def parse_input(data: bytes, as_of: datetime, *, lazy: bool = False) -> ParseResult:
    """Parse one whole input; raise InputError if it cannot be read at all.

    `lazy`: formats that support it leave their entries unparsed (`ParseResult.raw`).
    """
    if not data.strip():
        raise InputError("empty file")
    if data.lstrip().startswith(b"<"):
        return _parse_xml(data)
    text = _decode(data)
    if text.lstrip()[:1] in ("[", "{"):
        return _parse_json(text, lazy)
    if looks_like_hf_page(text):
        return parse_hf_page(text, as_of.date())
    raise InputError(f"unknown format; expected {KNOWN}")
