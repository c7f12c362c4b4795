"""`processors.heap.trim` on the real allocator (glibc): freed heap memory goes back to the
OS; below the threshold nothing is done."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors import heap

pytestmark = pytest.mark.skipif(heap.mallinfo() is None, reason="needs glibc >= 2.33")


def _rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon")


def test_freed_heap_memory_is_returned() -> None:
    heap.trim(above=0)
    # 256 MB in 32 KB blocks (under the mmap threshold: they live in the heap), each
    # followed by a small block that stays: freeing the big ones leaves holes that glibc
    # keeps (nothing at the heap's top to cut)
    pairs = [(bytearray(b"\1" * (32 * 1024)), bytearray(64)) for _ in range(8192)]
    pins = [small for _, small in pairs]
    del pairs
    held = _rss_anon_mb()
    assert not heap.trim(above=1 << 40)  # below the threshold: nothing
    assert _rss_anon_mb() > held - 64
    assert heap.trim()
    assert _rss_anon_mb() < held - 128, (held, _rss_anon_mb())
    del pins
