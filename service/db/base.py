"""The declarative base every SQL model derives from, with one naming convention for constraints."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import MetaData
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
