"""The declarative base every SQL model derives from, with one naming convention for constraints, and
small helpers for stored times and for queries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, MetaData, tuple_
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The largest value an `Integer` column holds on PostgreSQL (a 32-bit INTEGER; `BigInteger` holds 2**63 - 1):
# the API bounds every number it stores or looks up in such a column by it.
INTEGER_MAX = 2**31 - 1
INTEGER_MIN = -(2**31)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utc_now() -> datetime:
    """Now, in UTC: the default clock of everything that stores times."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """A stored time, in UTC: SQLite hands datetimes back naive even from timezone-aware columns, and every
    time this service stores is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def equal_as_range(
    column: Any, then: Any, value: Any, lowest: Any, before: Any = None
) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """`column = value` (and, given `before`, `then < before`) as one range of an index on (`column`,
    `then`) read backwards, `lowest` being below every `then`: `column <= value AND (column, then) >=
    (value, lowest)`, or `column >= value AND (column, then) < (value, before)`. The same rows; but
    without statistics PostgreSQL takes an equality for a few rows and would sort them all (a table
    filled after its indexes were made), while a one-sided range and a row comparison it takes for many,
    and reads them in the index's order, stopping at the page."""
    if before is None:
        return column <= value, tuple_(column, then) >= (value, lowest)
    return column >= value, tuple_(column, then) < (value, before)
