"""The web front's hardening and error pages, the same for every route.

Every response carries the security headers: a strict Content-Security-Policy
(scripts and styles only from /static), `X-Frame-Options: DENY`, `nosniff`,
`Referrer-Policy: no-referrer` (links carry tokens) and, but for static files,
`no-store` caching. Every error is one friendly page (JSON under /api/): a bad,
expired or revoked token gets the same 404 whether or not the address exists, and
an unexpected error is logged by its route, never by its path, which may carry a
subscriber's token.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("digest.web")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
NOT_FOUND = (
    "Link not valid",
    "This link is not valid any more: it may be incomplete, expired, or replaced by a newer "
    "one. The most recent email you received has working links.",
)


def page(template: str, http_status: int = 200, **context: Any) -> ResponseReturnValue:
    return render_template(template, **context), http_status


def error_page(status: int, title: str, message: str) -> ResponseReturnValue:
    if request.path.startswith("/api/"):
        return {"error": message}, status
    return page("error.html", status, title=title, message=message)


def secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    if status == 404 and request.url_rule is None:  # no such page: not a token's
        return error_page(404, "Page not found", "There is no page at this address.")
    if status == 404:
        return error_page(404, *NOT_FOUND)
    if status == 429:
        return error_page(429, "Too many requests", "Please wait a little and try again.")
    if status == 413:
        return error_page(413, "Too large", "That form is far larger than it can be.")
    return error_page(status, exc.name, exc.description or exc.name)


def csrf_error(exc: CSRFError) -> ResponseReturnValue:
    return error_page(
        400,
        "Form expired",
        "This form was open too long or came from elsewhere. Go back, reload the page "
        "and send it again.",
    )


def unexpected(exc: Exception) -> ResponseReturnValue:
    # The route, not the path: a path carries a subscriber's token (a manage link
    # in a log file would let its readers change or end that subscription).
    route = request.url_rule.rule if request.url_rule is not None else request.path
    log.exception("unexpected error on %s %s", request.method, route)
    return error_page(
        500, "Something went wrong", "Sorry, that did not work. Please try again later."
    )


def install(app: Flask) -> None:
    """The headers on every response of `app`, and its error pages."""
    app.after_request(secure)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(CSRFError, csrf_error)
    app.register_error_handler(Exception, unexpected)
