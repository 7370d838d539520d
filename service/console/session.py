"""Console sessions: a signed, expiring cookie that names a session the server keeps.

Signing in stores a session row (`console_sessions`): the SHA-256 of a random session token, the API key's
id and the session's expiry. The cookie holds the token, the key's id (never the key), the person's CSRF
token and the moment it expires, signed with HMAC-SHA256. Every request looks the session and its key up
again, so signing out (the row is deleted) ends the session at once, even for a copy of the cookie, and so
does revoking the key (its rows are deleted with it, and a revoked key is refused anyway). The signing
secret is `CONSOLE_SECRET` when set (every host of a deployment must share it); otherwise one is created
in the var directory on first use and shared by the workers of that host.

Before sign-in, the sign-in form is protected by a pre-session cookie that carries only a CSRF token (it
is not stored: it opens nothing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.base import aware
from service.db.models import ApiKey, ConsoleSessionRow
from service.security.keys import Principal
from service.settings import VAR_DIR

COOKIE = "rp_console"
PRE_COOKIE = "rp_console_signin"
SESSION_SECONDS = int(os.environ.get("CONSOLE_SESSION_SECONDS", str(8 * 3600)))
PRE_SESSION_SECONDS = 1800


@dataclass(frozen=True)
class ConsoleSession:
    """What the cookie says: whose key and which stored session (both None before sign-in), the CSRF
    token, and when it expires."""

    key_id: str | None
    csrf: str
    expires_at: float
    token: str | None = None

    @property
    def row_id(self) -> str | None:
        """The id of its row in `console_sessions` (None before sign-in)."""
        return None if self.token is None else hashlib.sha256(self.token.encode()).hexdigest()

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


def _secret_file() -> Path:
    return VAR_DIR / "console-secret"


def load_secret() -> bytes:
    """`CONSOLE_SECRET`, or the host's secret file (created once, readable by the owner only)."""
    configured = os.environ.get("CONSOLE_SECRET")
    if configured:
        return configured.encode()
    path = _secret_file()
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # written whole under a private name, then linked into place: a worker never reads a half-written
    # secret, and when two workers race the first link wins and both use its secret
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_bytes().strip()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(session: ConsoleSession, secret: bytes) -> str:
    payload = _b64(
        json.dumps(
            {"k": session.key_id, "c": session.csrf, "e": session.expires_at, "s": session.token}
        ).encode()
    )
    signature = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def decode(value: str | None, secret: bytes, now: float | None = None) -> ConsoleSession | None:
    """The session in a cookie value, or None if it is missing, forged, malformed or expired."""
    if not value or "." not in value:
        return None
    payload, signature = value.rsplit(".", 1)
    expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature, expected):
        return None
    try:
        data: dict[str, Any] = json.loads(_unb64(payload))
        session = ConsoleSession(
            key_id=data["k"] if isinstance(data["k"], str) else None,
            csrf=str(data["c"]),
            expires_at=float(data["e"]),
            token=data["s"] if isinstance(data.get("s"), str) else None,
        )
    except (ValueError, KeyError, TypeError):
        return None
    return None if session.expired(time.time() if now is None else now) else session


def new_session(key_id: str | None, lifetime: float, key_expires_at: float | None = None) -> ConsoleSession:
    """A fresh session (and CSRF token); it never outlives the key it was signed in with."""
    expires = time.time() + lifetime
    if key_expires_at is not None:
        expires = min(expires, key_expires_at)
    token = None if key_id is None else secrets.token_urlsafe(32)
    return ConsoleSession(key_id=key_id, csrf=secrets.token_urlsafe(32), expires_at=expires, token=token)


def csrf_matches(session: ConsoleSession, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, presented or "")


async def store(db: AsyncSession, session: ConsoleSession) -> None:
    """Keep a signed-in session on the server (and drop the expired ones); the caller commits."""
    assert session.key_id is not None and session.row_id is not None
    now = datetime.now(UTC)
    await db.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= now))
    db.add(
        ConsoleSessionRow(
            id=session.row_id,
            key_id=session.key_id,
            created_at=now,
            expires_at=datetime.fromtimestamp(session.expires_at, UTC),
        )
    )


async def end(db: AsyncSession, session: ConsoleSession) -> None:
    """Forget a session: its cookie, and every copy of it, opens nothing from now on; the caller commits."""
    if session.row_id is not None:
        await db.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.id == session.row_id))


async def signed_in(db: AsyncSession, session: ConsoleSession) -> Principal | None:
    """The key of a stored, unexpired session whose key is not revoked (expired or not: the caller checks)."""
    if session.key_id is None or session.row_id is None:
        return None
    found = (
        await db.execute(
            select(ApiKey, ConsoleSessionRow.expires_at)
            .join(ConsoleSessionRow, ConsoleSessionRow.key_id == ApiKey.id)
            .where(
                ConsoleSessionRow.id == session.row_id,
                ApiKey.id == session.key_id,
                ApiKey.revoked_at.is_(None),
            )
        )
    ).one_or_none()
    if found is None:
        return None
    row, session_expires = found
    if aware(session_expires) <= datetime.now(UTC):
        return None
    expires_at = aware(row.expires_at) if row.expires_at else None
    return Principal(key_id=row.id, name=row.name, roles=frozenset(row.roles), expires_at=expires_at)
