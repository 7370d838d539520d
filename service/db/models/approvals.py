"""Requests filed through the approval workflow, the inbox index of cases by approver role, and price changes.

A `ChangeRequest` is one transfer or markdown request as filed (`POST /v1/transfers`, `/v1/markdowns`):
its body (what idempotency compares), the decision it got, and the case it opened. `ApprovalCaseRole`
lists, per case, the roles that may act on it now, so an approver's inbox is one index range scan.
`ItemPrice` is a price an approved markdown sets from its effective time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base
from service.db.models.foundation import BigIntPK


class ChangeRequest(Base):
    __tablename__ = "change_requests"

    id: Mapped[str] = mapped_column(
        String(200), primary_key=True
    )  # the case subject, "transfer:<request_id>"
    kind: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical body
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(200))  # the filing key's name
    decision: Mapped[dict[str, Any]] = mapped_column(JSON)  # the decision response, with its trace
    outcome: Mapped[str] = mapped_column(String(16))
    case_id: Mapped[str] = mapped_column(String(36), index=True)
    approval: Mapped[str] = mapped_column(String(8))  # any | all
    # set once the stock move of an approved transfer is committed to (before it is applied)
    shipment_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApprovalCaseRole(Base):
    """A role that may act on a pending case now, keyed in inbox order: a role's pending cases oldest first
    are one range of the key, and a case's row is found (and deleted) by its key, read from the case. On
    SQLite the table is its key's b-tree (`WITHOUT ROWID`): a row written or deleted changes one page."""

    __tablename__ = "approval_case_roles"
    __table_args__ = {"sqlite_with_rowid": False}

    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    # on SQLite always the text of SQLAlchemy's DATETIME (`YYYY-MM-DD HH:MM:SS.ffffff`): the key is matched
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))


class ItemPrice(Base):
    __tablename__ = "item_prices"
    __table_args__ = (Index("ix_item_prices_sku_effective_at", "sku", "effective_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    sku: Mapped[str] = mapped_column(String(64))
    price: Mapped[float] = mapped_column(Float)
    effective_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    case_id: Mapped[str | None] = mapped_column(String(36), nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
