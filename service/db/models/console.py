"""Console sessions, kept on the server so that signing out (or revoking the key) ends a session at once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base


class ConsoleSessionRow(Base):
    """One signed-in console session. `id` is the SHA-256 of the session's token (the cookie carries the
    token, signed; the table never holds it), `key_id` the API key it was signed in with."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
