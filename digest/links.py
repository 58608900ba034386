"""Signed links: per-subscriber (confirm, unsubscribe, manage) and per-digest (the web copy).

A subscriber token is the subscriber id (plus, for confirmations, the time it
was issued and the subscription request it confirms; for old view links, the
digest date), signed with itsdangerous
under a key made of the site's secret key and the subscriber's own secret, so
a token is short, cannot be forged or moved to another subscriber, and is
revoked by rotating that subscriber's secret. Confirmation tokens expire;
unsubscribe and manage tokens do not, so a link in an old email keeps working.

A digest's web copy (`/digest/<ref>`) shows no personal data and is shared by
every recipient of that content; its reference is the digest id signed with
the site key alone, so digests cannot be enumerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, Signer, URLSafeSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.serializer import Serializer

PURPOSES = ("unsubscribe", "manage", "view", "confirm")
SHORT_PAYLOAD = 64  # bytes of JSON that are signed as they are, without trying zlib
# A token is an id or two numbers and its signature (under 100 characters). A longer
# one is refused before it is decoded: itsdangerous inflates a compressed payload
# (a leading ".") with no bound, so a 258 KB "token" could take 190 MB before its
# signature fails; 256 characters inflate to at most about 200 KB.
MAX_TOKEN_LENGTH = 256


class _Serializer(URLSafeSerializer):
    """itsdangerous's URL-safe serializer, minus its zlib attempt on short payloads.

    Payloads here are an id or two numbers, which zlib practically never shortens,
    yet each attempt costs about 0.1 ms (a new deflate state): two per message. Tokens
    are read exactly as before (a compressed one too).
    """

    def dump_payload(self, obj: Any) -> bytes:
        json = Serializer.dump_payload(self, obj)
        if len(json) >= SHORT_PAYLOAD:
            return super().dump_payload(obj)
        return base64_encode(json)


def _serializer(site_key: str, subscriber_secret: str, purpose: str) -> URLSafeSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}")
    return _Serializer([f"{site_key}:{subscriber_secret}"], salt=f"digest-{purpose}")


def make_token(site_key: str, subscriber_secret: str, purpose: str, payload: Any) -> str:
    return str(_serializer(site_key, subscriber_secret, purpose).dumps(payload))


def _decodable(token: str) -> bool:
    """Whether `token` is short enough to be decoded at all."""
    return len(token) <= MAX_TOKEN_LENGTH


def token_payload(token: str) -> Any:
    """The payload of a token before its signature is checked (to find the subscriber);
    None for a token too long to be one of ours."""
    if not _decodable(token):
        return None
    _ok, payload = URLSafeSerializer("unchecked").loads_unsafe(token)
    return payload


def token_subscriber_id(token: str) -> int | None:
    """The subscriber id a token claims (unchecked), or None if it holds none."""
    payload = token_payload(token)
    if isinstance(payload, list) and payload:
        payload = payload[0]
    return payload if is_row_id(payload) else None


def is_row_id(value: object) -> bool:
    """Whether `value` can be a database row id: a positive integer that fits the `Integer`
    id columns, 32-bit on PostgreSQL (a larger one is an error there, not a missing row)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31


def verify_token(site_key: str, subscriber_secret: str, purpose: str, token: str) -> Any:
    """The payload if the signature holds for this subscriber and purpose, else None."""
    if not _decodable(token):
        return None
    try:
        return _serializer(site_key, subscriber_secret, purpose).loads(token)
    except BadSignature:
        return None


def confirm_token(
    site_key: str,
    subscriber_secret: str,
    subscriber_id: int,
    now: datetime,
    request: tuple[int, str] | None = None,
) -> str:
    """A confirmation token issued at `now`, for one subscription request (its id and the
    hash of what it asked for): the link confirms that request and nothing else."""
    payload: list[Any] = [subscriber_id, int(now.timestamp())]
    if request is not None:
        payload.extend(request)
    return make_token(site_key, subscriber_secret, "confirm", payload)


@dataclass(frozen=True)
class Confirmation:
    """What a valid confirmation token confirms: a request, or (a token issued before
    requests were kept apart) the subscriber's stored settings."""

    subscriber_id: int
    request: tuple[int, str] | None


def verify_confirm_token(
    site_key: str, subscriber_secret: str, token: str, now: datetime, max_age: timedelta
) -> Confirmation | None:
    """What a confirmation token issued at most `max_age` before `now` confirms."""
    payload = verify_token(site_key, subscriber_secret, "confirm", token)
    if not (isinstance(payload, list) and len(payload) in (2, 4)):
        return None
    subscriber_id, issued, *rest = payload
    if not isinstance(subscriber_id, int) or not isinstance(issued, int):
        return None
    request: tuple[int, str] | None = None
    if rest:
        request_id, digest = rest
        if not (is_row_id(request_id) and isinstance(digest, str)):
            return None
        request = (request_id, digest)
    age = now.timestamp() - issued
    # A minute of tolerance for clocks of several hosts that disagree slightly.
    if not -60 <= age <= max_age.total_seconds():
        return None
    return Confirmation(subscriber_id, request)


def _digest_signer(site_key: str) -> Signer:
    return Signer(site_key, salt="digest-page")


def digest_ref(site_key: str, digest_id: int) -> str:
    """The public reference of a stored digest: its id, signed."""
    return _digest_signer(site_key).sign(str(digest_id)).decode()


def digest_id_from_ref(site_key: str, ref: str) -> int | None:
    try:
        value = _digest_signer(site_key).unsign(ref).decode()
    except BadSignature:
        return None
    number = int(value) if value.isdigit() and len(value) < 20 else None
    return number if is_row_id(number) else None


@dataclass(frozen=True)
class SubscriberLinks:
    unsubscribe: str
    manage: str
    view: str


def subscriber_links(
    base_url: str,
    site_key: str,
    subscriber_id: int,
    subscriber_secret: str,
    digest_id: int | None = None,
) -> SubscriberLinks:
    """Absolute, signed URLs for one subscriber's digest.

    "View in browser" opens the digest's public web copy; a digest not stored
    yet (a preview) has none, so the link opens the subscriber's preferences
    page, which previews the next digest.
    """
    base = base_url.rstrip("/")
    manage = f"{base}/manage/{make_token(site_key, subscriber_secret, 'manage', subscriber_id)}"
    return SubscriberLinks(
        unsubscribe=(
            f"{base}/unsubscribe/"
            f"{make_token(site_key, subscriber_secret, 'unsubscribe', subscriber_id)}"
        ),
        manage=manage,
        view=f"{base}/digest/{digest_ref(site_key, digest_id)}" if digest_id else manage,
    )


def insecure_base_url(base_url: str) -> str | None:
    """A warning when links would be plain http on a public host (RFC 8058 wants HTTPS)."""
    parts = urlsplit(base_url)
    local = (parts.hostname or "") in {"localhost", "127.0.0.1", "::1"} or (
        parts.hostname or ""
    ).endswith(".localhost")
    if parts.scheme != "https" and not local:
        return (
            f"site.base_url {base_url} is not https: mail providers expect an HTTPS "
            "one-click unsubscribe link (RFC 8058); serve it behind a TLS reverse proxy"
        )
    return None
