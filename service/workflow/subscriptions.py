"""Webhook subscriptions: which event kinds go to which URL, and how each request is signed.

A request's body is the event as JSON. Its signature is the hex HMAC-SHA256, keyed with the
subscription's secret, of `<timestamp>.<event id>.<body>`: the `X-Retail-Policy-Timestamp` header
(Unix seconds), a dot, the `X-Retail-Policy-Event-Id` header, a dot, then the raw body bytes. It is sent as
`X-Retail-Policy-Signature: sha256=<hex>`. `verify` below is what a receiver runs (docs/approvals.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

SIGNATURE = "X-Retail-Policy-Signature"
EVENT_ID = "X-Retail-Policy-Event-Id"
TIMESTAMP = "X-Retail-Policy-Timestamp"
DELIVERY_ID = "X-Retail-Policy-Delivery-Id"
MAX_URL_LENGTH = 2000
PATTERN = re.compile(r"^(\*|[a-z_]+(\.([a-z_]+|\*))*)$")


def signed_material(timestamp: int, event_id: str, body: bytes) -> bytes:
    return f"{timestamp}.{event_id}.".encode() + body


def sign(secret: str, timestamp: int, event_id: str, body: bytes) -> str:
    """The `X-Retail-Policy-Signature` header's value."""
    digest = hmac.new(secret.encode(), signed_material(timestamp, event_id, body), hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(secret: str, timestamp: str, event_id: str, body: bytes, signature: str) -> bool:
    """True when `signature` is what `secret` makes of this request (constant-time comparison)."""
    expected = sign(secret, int(timestamp), event_id, body)
    return hmac.compare_digest(expected, signature)


def matches(patterns: list[str], kind: str) -> bool:
    """`case.*` matches every case event, `*` every event, anything else one kind exactly."""
    return any(fnmatchcase(kind, pattern) for pattern in patterns)


def url_problem(url: str) -> str | None:
    """Why a subscription URL is refused, or None: only absolute http(s) URLs with a host."""
    if len(url) > MAX_URL_LENGTH:
        return f"at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it validates the port
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https"):
        return "only http and https URLs are accepted"
    if not parts.hostname:
        return "the URL names no host"
    if parts.username or parts.password:
        return "credentials in the URL are not accepted; the signature authenticates the sender"
    return None


def pattern_problem(pattern: str) -> str | None:
    if not PATTERN.match(pattern):
        return "an event kind such as 'case.approved', a family such as 'case.*', or '*'"
    return None
