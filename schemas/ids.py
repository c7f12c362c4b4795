"""Event ids: UUIDv7 (RFC 9562), monotonic within a process.

Rule: ids sort by creation time. Layout (RFC 9562 §5.7): 48-bit Unix milliseconds, version 7,
then 74 random bits. Within one millisecond (or when the clock steps back) the 74-bit random
part of the previous id is incremented by a random 1..2**32 (RFC 9562 §6.2, method 2,
"monotonic random"), so ids of one process strictly increase; the counter starts each
millisecond below 2**73, leaving room for ~2**41 ids per millisecond before it overflows into
the next millisecond. A forked child starts afresh (no shared state with its parent).
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_event_id", "uuid7_time_ms"]

_RAND_BITS = 74
_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _reset_after_fork() -> None:
    global _lock, _last_ms, _last_rand
    _lock = threading.Lock()
    _last_ms, _last_rand = -1, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _fresh() -> int:
    return int.from_bytes(os.urandom(10), "big") >> (80 - _RAND_BITS + 1)  # top bit clear


def new_event_id() -> str:
    """A new UUIDv7 string, e.g. '01890a5d-ac96-774b-bcce-b302099a8057'."""
    global _last_ms, _last_rand
    now = time.time_ns() // 1_000_000
    with _lock:
        if now > _last_ms:
            ms, rand = now, _fresh()
        else:  # same millisecond or the clock went back: keep increasing
            ms = _last_ms
            rand = _last_rand + 1 + (int.from_bytes(os.urandom(4), "big"))
            if rand >= 1 << _RAND_BITS:
                ms, rand = ms + 1, _fresh()
        _last_ms, _last_rand = ms, rand
    rand_a = rand >> 62
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def uuid7_time_ms(event_id: str) -> int:
    """The Unix milliseconds embedded in a UUIDv7 string."""
    return int(event_id.replace("-", "")[:12], 16)
