"""Give the C heap's freed memory back to the OS between batches; tune Python's cyclic GC.

A batch allocates hundreds of MB of short-lived buffers (decoded records, numpy columns,
Arrow tables) from several threads. glibc keeps what they free in its arenas: measured in
`runstream serve` while 8 ranks logged 10 M points, 493 MB sat freed-but-kept in the heap
after the run (36 MB in use), which is most of the gap between the standalone worker's peak
RSS and serve's. `trim()` asks glibc to release it (`malloc_trim(0)` also returns free pages
in the middle of the heap) when more than `TRIM_ABOVE` is free; a no-op without glibc.

Trimming every 2 s still leaves what a busy interval frees resident until the next trim:
glibc serves a freed block of ≥ 128 KiB from mmap only until the first such block is freed,
then raises its mmap threshold (up to 32 MiB) and carves the next ones (Kafka record values
of ~200 KB, fetch buffers, numpy columns) out of the heap. `map_large_blocks()` pins the
threshold at `MMAP_THRESHOLD`, so large blocks are mapped on allocation and unmapped on
free: measured in serve, 8 ranks logging 10 M points, the heap's freed-but-kept memory at
the peak fell from 213-323 MB to 27-59 MB and VmHWM from 1,064-1,092 to 842-964 MB, at
the same throughput (the standalone worker: peak RSS 1,037 -> 835 MB, ~10 % fewer
points/s from the extra page faults).

Python's cyclic GC, at its default thresholds (700, 10, 10), runs a young collection every
700 net new container objects. A batch of 20,000 small records keeps ~400 k of them alive
while it is decoded and projected (Kafka records, events, envelopes, row dicts, run states),
so collections come hundreds of times per batch and promote the batch into the old
generation, whose full collections then walk all of it. Replaying 240 k run lifecycle events
(40 k runs, alone on the host): 4.6-5.1 s of 17.5-17.9 s in the GC (4,200+ collections,
the longest 400 ms); in `serve`, while 100 k runs were projected, full collections of
150-400 ms every ~2 s, each stalling every thread of the process (the API's requests too).
`tune_gc()` raises the thresholds to `GC_THRESHOLDS` in a process that projects: the same
replay spent 0.9-1.0 s in 17-20 collections and ran at 16.0-16.9 k events/s instead of
13.4-13.7 k; serve made the 100 k runs searchable in 53.0 / 53.8 s instead of 62.1 / 63.0.
What remains are young collections of 30-80 ms every second or two under such a load (the
batch in flight is that young generation). Nearly everything a batch allocates is freed by
reference counting; the GC only finds cycles, which now wait for up to 100 k new objects.
"""

from __future__ import annotations

import ctypes
import gc
import os
from typing import Any

#: trim once this much freed memory is kept in the heap (one check costs microseconds)
TRIM_ABOVE = 64 * 1024 * 1024
#: blocks this large or larger are mapped on their own (glibc's initial threshold, pinned)
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
_ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's own knob: an operator's value wins
#: the cyclic GC's thresholds in a process that projects events (see the module doc)
GC_THRESHOLDS = (100_000, 20, 100)


class Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = Mallinfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc >= 2.33
        return None
    return libc


_LIBC = _libc()


def mallinfo() -> Mallinfo2 | None:
    """glibc's heap statistics over all arenas, or None without glibc."""
    return None if _LIBC is None else _LIBC.mallinfo2()


def trim(above: int = TRIM_ABOVE) -> bool:
    """Release the heap's free memory if more than `above` bytes of it are kept; True when
    glibc gave pages back (they stay counted as free heap, no longer resident)."""
    info = mallinfo()
    if info is None or info.fordblks < above:
        return False
    return bool(_LIBC.malloc_trim(0))


def map_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at `threshold` for this process (see the module doc), unless
    the environment sets MALLOC_MMAP_THRESHOLD_; True when it was set here."""
    if _LIBC is None or _ENV in os.environ:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, threshold))


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> bool:
    """Raise the cyclic GC's thresholds to `thresholds` for this process (see the module
    doc), unless they are already at least that high (never lowered here: the process may
    have chosen higher ones) or the GC is disabled; True when they were set here."""
    current = gc.get_threshold()
    if not gc.isenabled() or current[0] == 0 or current[0] >= thresholds[0]:
        return False
    gc.set_threshold(*thresholds)
    return True
