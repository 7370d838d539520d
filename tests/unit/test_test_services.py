"""The test sessions' own Redis databases: two sessions never share one, and no one's data is flushed."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.services import CANDIDATE_DATABASES, CLAIM_PREFIX, claimed_database, redis_answers

pytestmark = pytest.mark.skipif(not redis_answers("127.0.0.1", 6379), reason="needs the Redis on 6379")


def test_two_sessions_claim_different_databases_and_release_them() -> None:
    with (
        claimed_database("127.0.0.1", 6379, None) as first,
        claimed_database("127.0.0.1", 6379, None) as second,
    ):
        assert first != second
        claims = redis.Redis(db=0)
        assert claims.exists(f"{CLAIM_PREFIX}{first}") and claims.exists(f"{CLAIM_PREFIX}{second}")
    assert not claims.exists(f"{CLAIM_PREFIX}{first}")
    assert not claims.exists(f"{CLAIM_PREFIX}{second}")


def test_a_database_holding_someone_elses_data_is_neither_claimed_nor_flushed() -> None:
    with claimed_database("127.0.0.1", 6379, None) as probe:
        pass  # the first free database, released again
    foreign = redis.Redis(db=probe)
    key = f"someone-else:{uuid.uuid4().hex}"
    foreign.set(key, "theirs")
    try:
        with claimed_database("127.0.0.1", 6379, None) as mine:
            assert mine != probe
            assert mine in CANDIDATE_DATABASES
            redis.Redis(db=mine).set("ours", "1")
        assert foreign.get(key) == b"theirs"
        assert redis.Redis(db=mine).dbsize() == 0
    finally:
        foreign.delete(key)
