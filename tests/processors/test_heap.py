"""`processors.heap` on the real allocator (glibc): freed heap memory goes back to the
OS (by a trim above the threshold, or at once for large blocks once they are pinned to
mmap); below the threshold a trim does nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    # 256 MB in 32 KB blocks (under any mmap threshold: they live in the heap), each
    # followed by a 1 KiB block (from glibc too: over pymalloc's 512 bytes) that stays:
    # freeing the big ones leaves holes that glibc keeps, whatever its trim threshold
    # (nothing at the heap's top to cut)
    pairs = [(bytearray(b"\1") * (32 * 1024), bytearray(1024)) for _ in range(8192)]
    pins = [small for _, small in pairs]
    del pairs
    held = _rss_anon_mb()
    assert not heap.trim(above=1 << 40)  # below the threshold: nothing
    assert _rss_anon_mb() > held - 64
    assert heap.trim()
    assert _rss_anon_mb() < held - 128, (held, _rss_anon_mb())
    del pins


# Run in a child: the mmap threshold is process-wide and would outlive the test here.
_HOLES = """
import json, sys
from pathlib import Path
from processors import heap

def anon_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

pinned = sys.argv[1] == "pin"
if pinned:
    assert heap.map_large_blocks()
# one large block freed: unpinned, glibc raises its mmap threshold above 256 KiB here
first = bytearray(b"\\1") * (256 * 1024)
del first
base = anon_mb()
# 256 MB of 256 KiB blocks, each followed by a 1 KiB block (from glibc too: over pymalloc's
# 512 bytes) that stays, so nothing is at the heap's top to cut
pairs = [(bytearray(b"\\1") * (256 * 1024), bytearray(1024)) for _ in range(1024)]
pins = [small for _, small in pairs]
held = anon_mb()
del pairs
print(json.dumps({"grew": held - base, "kept": anon_mb() - base}))
"""


def _holes(mode: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _HOLES, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**env, "PYTHONPATH": str(root)},
    )
    return dict(json.loads(out.stdout))


def test_large_blocks_pinned_to_mmap_are_returned_on_free() -> None:
    loose, pinned = _holes("loose"), _holes("pin")
    assert loose["grew"] > 200, loose
    assert pinned["grew"] > 200, pinned
    # without the pin, the freed 256 KiB blocks stay in the heap, resident
    assert loose["kept"] > 200, loose
    # pinned, each was its own mapping, unmapped on free: no trim needed
    assert pinned["kept"] < 32, pinned


def test_an_operator_threshold_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert not heap.map_large_blocks()
