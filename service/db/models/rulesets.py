"""Ruleset versions, the per-ruleset active and shadow pointers, the per-kind default and the generation.

A version row is immutable once written except for its lifecycle columns (status, publisher,
published_at, retired_at). The single `ruleset_generation` row is bumped in the same transaction as
every change that alters what live decisions evaluate, so workers can poll one integer to notice it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base
from service.db.models.foundation import BigIntPK


class RulesetVersionRow(Base):
    """One version of one ruleset: the YAML text as submitted, its content hash and its lifecycle."""

    __tablename__ = "ruleset_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_ruleset_versions_name_version"),
        UniqueConstraint("name", "sha256", name="uq_ruleset_versions_name_sha256"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    yaml_text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    publisher: Mapped[str | None] = mapped_column(String(200), nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    validation: Mapped[dict[str, Any]] = mapped_column(JSON)


class RulesetRow(Base):
    """Per ruleset name: its kind and which version is active and which runs in shadow."""

    __tablename__ = "rulesets"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    active_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shadow_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RulesetKindRow(Base):
    """Per decision kind: the ruleset whose active version answers decisions that name none."""

    __tablename__ = "ruleset_kinds"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    ruleset_name: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RulesetGenerationRow(Base):
    """A single row whose counter increases with every change to what live decisions evaluate."""

    __tablename__ = "ruleset_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RulesetHeartbeatRow(Base):
    """One service worker process: the generation and versions it serves, written by its registry."""

    __tablename__ = "ruleset_heartbeats"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    engine: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(BigInteger)
    served: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reload_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
