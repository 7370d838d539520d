"""Decision ids are UUIDv7 and sort in creation order."""

from __future__ import annotations

import uuid

import pytest

from service.decisions import ids
from service.decisions.ids import new_decision_id, uuid7


def test_a_decision_id_is_a_version_7_rfc_9562_uuid() -> None:
    value = uuid.UUID(new_decision_id())
    assert (value.version, value.variant) == (7, uuid.RFC_4122)


def test_ids_made_one_after_another_sort_in_order() -> None:
    ids = [new_decision_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_the_id_carries_its_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "_last_ms", 0)  # restored after the test, so later ids keep the real clock
    value = uuid7(now_ms=1_700_000_000_123)
    assert value.int >> 80 == 1_700_000_000_123


def test_the_id_is_written_in_the_canonical_form() -> None:
    text = new_decision_id()
    assert text == str(uuid.UUID(text))


def test_forked_workers_draw_different_random_bits() -> None:
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its generator was reseeded at the fork
        os.write(write, ids._random.getrandbits(62).to_bytes(8, "big"))
        os._exit(0)
    os.close(write)
    child = int.from_bytes(os.read(read, 8), "big")
    os.waitpid(pid, 0)
    os.close(read)
    assert child != ids._random.getrandbits(62)
