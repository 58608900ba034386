"""Fetch URL inputs politely: a deadline, retries with backoff, a delay per host, a size cap.

`HttpFetcher.fetch(url) -> bytes` is the only network I/O of ingestion; the URL must
pass `digest.urls.http_url` (sent in ASCII: an international host in punycode); the
parsers in `digest.sources` never touch the network. The clock and sleep are
injected so tests can check the delays without waiting for them.

`timeout` bounds each attempt as a whole, from connecting to the last byte:
a server that drips a byte at a time cannot hold a download longer. A
watchdog shuts the attempt's sockets down when its deadline passes.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from digest.sources.records import InputError
from digest.urls import MAX_FETCHED, UrlRefused, http_url

RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


class _Watchdog:
    """Shuts down every socket of one download attempt when its deadline passes."""

    def __init__(self) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def running(self, seconds: float) -> Iterator[None]:
        timer = threading.Timer(seconds, self.expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


class _Watched:
    """Mixed into a connection class: its socket is handed to the attempt's watchdog."""

    sock: socket.socket

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watchdog = watchdog

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.watchdog.watch(self.sock)


class _WatchedHTTPConnection(_Watched, http.client.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, http.client.HTTPSConnection):
    pass


def _watched_opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """An opener whose http and https connections report their sockets to `watchdog`."""

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            connection = functools.partial(_WatchedHTTPConnection, watchdog=watchdog)
            return self.do_open(connection, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            connection = functools.partial(_WatchedHTTPSConnection, watchdog=watchdog)
            return self.do_open(connection, req)

    return urllib.request.build_opener(HTTPHandler(), HTTPSHandler())


@dataclass
class HttpFetcher:
    """Fetch http(s) URLs with retries, exponential backoff and a per-host delay."""

    timeout: float = 30.0
    retries: int = 3
    backoff: float = 2.0
    host_delay: float = 3.0
    max_bytes: int = 20 * 1024 * 1024
    user_agent: str = "papers-digest"
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _last_request: dict[str, float] = field(default_factory=dict)

    def _wait_for_host(self, host: str) -> None:
        last = self._last_request.get(host)
        if last is not None:
            remaining = self.host_delay - (self.monotonic() - last)
            if remaining > 0:
                self.sleep(remaining)
        self._last_request[host] = self.monotonic()

    def _read(self, url: str) -> bytes:
        """One attempt, from connecting to the last byte, within `timeout` seconds."""
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        watchdog = _Watchdog()
        opener = _watched_opener(watchdog)
        try:
            with watchdog.running(self.timeout), opener.open(request, timeout=self.timeout) as r:
                length = r.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise InputError(
                        f"larger than the {self.max_bytes} byte limit ({length} bytes)"
                    )
                body: bytes = r.read(self.max_bytes + 1)
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.expired:
                raise TimeoutError(f"not complete within {self.timeout:g} s") from None
            if isinstance(exc, http.client.HTTPException):
                raise ConnectionError(f"broken response: {type(exc).__name__}") from None
            raise
        if watchdog.expired:
            raise TimeoutError(f"not complete within {self.timeout:g} s")
        if len(body) > self.max_bytes:
            raise InputError(f"larger than the {self.max_bytes} byte limit")
        return body

    @staticmethod
    def _retry_after(error: urllib.error.HTTPError) -> float | None:
        value = error.headers.get("Retry-After") if error.headers else None
        if not value:
            return None
        if value.strip().isdigit():
            return float(value.strip())
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None

    def fetch(self, url: str) -> bytes:
        """The body of `url`; InputError once the retries are used up."""
        try:  # in ASCII: http.client cannot send anything else in the request line
            url = http_url(url, max_length=MAX_FETCHED, ascii=True)
        except UrlRefused as exc:
            raise InputError(str(exc)) from None
        host = urlsplit(url).netloc
        attempt = 0
        while True:
            self._wait_for_host(host)
            delay = self.backoff * (2**attempt)
            try:
                return self._read(url)
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUSES or attempt >= self.retries:
                    raise InputError(f"HTTP {exc.code} {exc.reason}") from None
                delay = max(delay, min(self._retry_after(exc) or 0.0, 300.0))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt >= self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise InputError(
                        f"fetch failed after {attempt + 1} attempts: {reason}"
                    ) from None
            attempt += 1
            self.sleep(delay)
