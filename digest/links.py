"""Signed per-subscriber links: unsubscribe, manage preferences, view in browser.

A token is the subscriber id (and for view links the digest date), signed
with itsdangerous under a key made of the site's secret key and the
subscriber's own secret, so a token is short, cannot be forged or moved to
another subscriber, and is revoked by rotating that subscriber's secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

PURPOSES = ("unsubscribe", "manage", "view")


def _serializer(site_key: str, subscriber_secret: str, purpose: str) -> URLSafeSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}")
    return URLSafeSerializer([f"{site_key}:{subscriber_secret}"], salt=f"digest-{purpose}")


def make_token(site_key: str, subscriber_secret: str, purpose: str, payload: Any) -> str:
    return str(_serializer(site_key, subscriber_secret, purpose).dumps(payload))


def token_payload(token: str) -> Any:
    """The payload of a token before its signature is checked (to find the subscriber)."""
    _ok, payload = URLSafeSerializer("unchecked").loads_unsafe(token)
    return payload


def verify_token(site_key: str, subscriber_secret: str, purpose: str, token: str) -> Any:
    """The payload if the signature holds for this subscriber and purpose, else None."""
    try:
        return _serializer(site_key, subscriber_secret, purpose).loads(token)
    except BadSignature:
        return None


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
    digest_date: date,
) -> SubscriberLinks:
    """Absolute, signed URLs for one subscriber's digest of `digest_date`."""
    base = base_url.rstrip("/")

    def token(purpose: str, payload: Any) -> str:
        return make_token(site_key, subscriber_secret, purpose, payload)

    return SubscriberLinks(
        unsubscribe=f"{base}/u/{token('unsubscribe', subscriber_id)}",
        manage=f"{base}/manage/{token('manage', subscriber_id)}",
        view=f"{base}/view/{token('view', [subscriber_id, digest_date.isoformat()])}",
    )
