"""The one rule for an http(s) URL, wherever one comes in.

Three places take a URL from outside: the config (`site.base_url`, which goes into
every email's links and List-Unsubscribe header), `digest ingest` (a URL it fetches)
and the feed parsers (a paper's PDF, code and project links, shown in digests). Each
calls `http_url`, which returns the URL (trimmed) or raises `UrlRefused` saying why:

- the scheme is http or https (any case) and the URL is absolute: `//` and a host;
- the host is a DNS name (letters, digits, `-` and `_` in dot-separated labels of at
  most 63 characters, 253 in all), an international name that IDNA 2008 accepts, an
  IPv4 address or a bracketed IPv6 address (no zone, no IPvFuture);
- the port, if written, is 1-65535;
- no user name or password (`https://github.com@evil.example/` shows one host and
  opens another; a password would be printed in logs and mailed to every subscriber);
- every character printable and none a space: no CR/LF (header injection), tab,
  NUL, Unicode space, bidirectional control or lone surrogate;
- at most `max_length` characters: 2048 for a link (`MAX_LINK`), 8000 for a URL
  fetched (`MAX_FETCHED`: RFC 9110 asks for at least 8000, and an arXiv `id_list`
  query grows with its ids).

Per use: `base=True` also refuses a query or fragment (site.base_url has paths
appended to it); `ascii=True` returns the URL in ASCII, an international host in
punycode and any other non-ASCII character percent-encoded as UTF-8 (a URL that goes
into a mail header or an HTTP request line). `safe_http_url(value)` is the parsers'
and templates' form: the URL, or None for anything refused (or not a string).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, urlsplit

from digest.errors import shown

MAX_LINK = 2048
MAX_FETCHED = 8000

# Labels of letters, digits, "-" and "_" (some real names have one), the root's "." at the end.
_HOST_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}\.?")
_BRACKETED = re.compile(r"\[[^\]]*\](?::[0-9]*)?")
_PORT = re.compile(r"[0-9]*")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


class UrlRefused(ValueError):
    """Why a URL is not an absolute http(s) URL this program accepts."""


def http_url(
    value: str, *, max_length: int = MAX_LINK, base: bool = False, ascii: bool = False
) -> str:
    """`value` trimmed, if it is an http(s) URL by the rules above; else UrlRefused."""
    text = value.strip()
    if len(text) > max_length:
        raise UrlRefused(f"the URL is longer than {max_length} characters")
    if not text.isprintable() or " " in text:
        raise UrlRefused("the URL has a space or control character")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # an unclosed [IPv6 address, a port "abc" or 99999
        raise UrlRefused("not a valid URL") from None
    if parts.scheme not in {"http", "https"}:
        raise UrlRefused("not an http or https URL")
    if "@" in parts.netloc:
        raise UrlRefused("the URL carries a user name or password")
    hostname = parts.hostname
    if not hostname:
        raise UrlRefused("the URL has no host")
    if port == 0:
        raise UrlRefused("port 0 is not a TCP port")
    _check_host(parts.netloc, hostname)
    if base and (parts.query or parts.fragment or "?" in text or "#" in text):
        raise UrlRefused("the URL has a query or fragment")
    if not ascii or text.isascii():
        return text
    start = len(parts.scheme) + len("://")
    end = start + len(parts.netloc)
    netloc = parts.netloc if parts.netloc.isascii() else _ascii_host(parts.netloc)
    return text[:start] + netloc + _NON_ASCII.sub(_quote, text[end:])


def _check_host(netloc: str, hostname: str) -> None:
    """UrlRefused unless `netloc` is a valid host and, if written, port."""
    if netloc.startswith("["):
        try:
            valid = bool(_BRACKETED.fullmatch(netloc)) and "%" not in hostname
            ipaddress.IPv6Address(hostname)
        except ValueError:
            valid = False
        if not valid:
            raise UrlRefused(f"host {shown('[' + hostname + ']')} is not an IPv6 address")
        return
    if not _PORT.fullmatch(netloc.partition(":")[2]):
        raise UrlRefused("not a valid URL")
    if hostname.isascii():
        if len(hostname) > 253 or not _HOST_NAME.fullmatch(hostname):
            raise UrlRefused(f"host {shown(hostname)} is not a host name")
    else:
        _ascii_name(hostname)


def _ascii_name(hostname: str) -> str:
    """An international host name in punycode (IDNA 2008, UTS 46 mapping); else UrlRefused."""
    import idna  # imported here: only an international name needs it

    try:
        encoded: bytes = idna.encode(hostname, uts46=True)
    except idna.IDNAError:
        raise UrlRefused(
            f"host {shown(hostname)} is not a valid international domain name"
        ) from None
    return encoded.decode("ascii")


def _ascii_host(netloc: str) -> str:
    name, colon, port = netloc.partition(":")
    return _ascii_name(name) + colon + port


def _quote(match: re.Match[str]) -> str:
    return quote(match.group(0), safe="")


def safe_http_url(value: object) -> str | None:
    """`value` if it is an http(s) URL by the rules above, else None: feeds may carry anything."""
    if not isinstance(value, str):
        return None
    try:
        return http_url(value)
    except UrlRefused:
        return None


def is_url(name: str) -> bool:
    """Whether an input or source names a URL (else a file or folder)."""
    return name[:8].lower().startswith(("http://", "https://"))


def mask_password(url: str) -> str:
    """`url` with any password in it replaced by ***, even when it does not parse."""
    return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)
