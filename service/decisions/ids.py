"""Decision ids: UUIDv7 (RFC 9562), so ids sort by creation time.

48 bits of Unix milliseconds, then a 12-bit counter that keeps ids made in the same millisecond by this
process in order, then 62 random bits. The random bits only keep ids of different processes apart, so
they come from a generator seeded from the operating system (again in every forked worker), not from a
system call per id.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_random = random.Random(os.urandom(32))


def _reseed() -> None:
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    return uuid.UUID(int=_uuid7_int(now_ms))


def _uuid7_int(now_ms: int | None = None) -> int:
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if ms <= _last_ms:
            # same (or an earlier, after a clock step) millisecond: keep counting from the last id
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = _random.getrandbits(8)  # a random start leaves room to count
        counter = _counter
        rand_b = _random.getrandbits(62)
    return (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b


def new_decision_id() -> str:
    text = f"{_uuid7_int():032x}"  # the canonical form, without building it through uuid.UUID.__str__
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
