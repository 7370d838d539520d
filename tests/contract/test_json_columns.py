"""JSON columns read on PostgreSQL give the values `json.loads` gives for their text, whatever the text."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import create_engine, json_value
from service.settings import DatabaseSettings

# what a json column may hold that decoders tell apart: numbers beyond a float's range, escaped lone
# surrogates, duplicate keys, integers of any length, negative zeros, floats at their precision's edge
TEXTS = [
    "1e400", "-1e400", "[1E400, 1]", '{"a": 1.7976931348623157e309}', "1e-400", "4.9e-325", "-0", "-0.0",
    '"\\ud800"', '"\\udc00x"', '["\\ud83d", "\\ude00"]', '"\\ud83d\\ude00"', '"\\u0000"', '"\\/\\b\\f\\n\\r\\t"',
    '{"a": 1, "b": 2, "a": 3}', '{"a": {"x": 1}, "a": [2]}', "123456789012345678901234567890",
    "-9223372036854775809", "18446744073709551616", "0.1", "1.0", "1E5", "123456789.123456789123456789",
    "2.5e-324", " [1, 2] ", "null", "true", '""', "{}", "[]", "[" * 200 + "]" * 200,
    '{"case_id": "c-1", "approvers": ["store_manager"], "qty": 3, "value": 12.5, "note": null}',
]  # fmt: skip


def _same(found: Any, expected: Any) -> bool:
    """Equal, of the same types all the way down (1 and 1.0, 0.0 and -0.0 told apart)."""
    if type(found) is not type(expected):
        return False
    if isinstance(expected, float):
        return math.copysign(1.0, found) == math.copysign(1.0, expected) and (
            found == expected or (math.isnan(found) and math.isnan(expected))
        )
    if isinstance(expected, dict):
        return list(found) == list(expected) and all(_same(found[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return len(found) == len(expected) and all(_same(f, e) for f, e in zip(found, expected, strict=True))
    return bool(found == expected)


@pytest.mark.parametrize("value", TEXTS)
def test_a_json_text_decodes_as_json_loads_decodes_it(value: str) -> None:
    assert _same(json_value(value), json.loads(value))


@pytest.fixture
async def postgres_engine(postgres_server_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=postgres_server_database))
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_json_and_jsonb_columns_read_as_json_loads_reads_their_text(
    postgres_engine: AsyncEngine,
) -> None:
    async with postgres_engine.connect() as connection:
        for value in TEXTS:
            found = await connection.scalar(text("SELECT CAST(:t AS json)"), {"t": value})
            assert _same(found, json.loads(value)), value
            if "\\ud8" in value or "\\udc" in value or "\\u0000" in value:
                continue  # jsonb refuses escaped lone surrogates and \u0000 (surrogate pairs skipped with them)
            # jsonb keeps the last of duplicate keys and makes numbers numerics: its text, as it gives it
            as_jsonb, jsonb_text = (
                await connection.execute(
                    text("SELECT CAST(:t AS jsonb), CAST(:t AS jsonb)::text"), {"t": value}
                )
            ).one()
            assert _same(as_jsonb, json.loads(jsonb_text)), value
