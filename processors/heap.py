"""Give the C heap's freed memory back to the OS between batches.

A batch allocates hundreds of MB of short-lived buffers (decoded records, numpy columns,
Arrow tables) from several threads. glibc keeps what they free in its arenas: measured in
`runstream serve` while 8 ranks logged 10 M points, 493 MB sat freed-but-kept in the heap
after the run (36 MB in use), which is most of the gap between the standalone worker's peak
RSS and serve's. `trim()` asks glibc to release it (`malloc_trim(0)` also returns free pages
in the middle of the heap) when more than `TRIM_ABOVE` is free; a no-op without glibc.
"""

from __future__ import annotations

import ctypes
from typing import Any

#: trim once this much freed memory is kept in the heap (one check costs microseconds)
TRIM_ABOVE = 64 * 1024 * 1024


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
