"""Running the web front: the app (`digest.web.create_app`) bound to a socket and served
by waitress, for `digest serve` and `digest run --serve`.

`listen` binds in the caller's thread, so a host that does not resolve or a port in
use is the caller's one-line error; `Listening.run` serves until interrupted (or a
`stop` event is set) and lets the app's background outbox finish its emails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask

from digest.app import App
from digest.errors import DigestError, shown
from digest.web import create_app


@dataclass
class Listening:
    """The web front bound to its socket (`listen`), ready to `run`."""

    app: Flask
    server: Any  # waitress's server

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until interrupted (or `stop` is set)."""
        if stop is not None:
            server = self.server
            threading.Thread(
                target=lambda: (stop.wait(), server.close()), name="digest-web-stop", daemon=True
            ).start()
        try:
            self.server.run()
        except (OSError, ValueError):
            if stop is None or not stop.is_set():
                raise
        finally:
            self.app.extensions["digest.outbox"].drain(10)


def listen(wiring: App, host: str, port: int) -> Listening:
    """The web front bound to `host`:`port` with waitress, in the caller's thread, so a host
    that does not resolve or a port in use is the caller's one-line error (`digest run
    --serve` binds before it starts the web thread)."""
    from waitress.server import create_server

    app = create_app(wiring=wiring)
    try:
        server = create_server(app, host=host, port=port, threads=wiring.config.web.threads)
    except ValueError as exc:  # waitress: a host that does not resolve to an address
        app.extensions["digest.outbox"].drain(10)
        raise DigestError(f"cannot listen on host {shown(host)}, port {port}: {exc}") from None
    except OSError as exc:  # the port is in use, or not ours to bind
        app.extensions["digest.outbox"].drain(10)
        reason = exc.strerror or exc
        raise DigestError(f"cannot listen on host {shown(host)}, port {port}: {reason}") from None
    return Listening(app, server)


def serve(
    wiring: App,
    host: str,
    port: int,
    *,
    stop: threading.Event | None = None,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve the web front with waitress until interrupted (or `stop` is set).

    `on_listening` is called once the socket is bound, before the first request.
    """
    listening = listen(wiring, host, port)
    if on_listening is not None:
        on_listening()
    listening.run(stop)
