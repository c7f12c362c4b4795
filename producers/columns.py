"""Metric points as preallocated `array.array` columns, packed once per flush window.

Rule: the per-point hot path appends six machine numbers to six arrays and allocates nothing
else; key/split strings are interned once per run into small tables (`KeyTable`), so a point
costs ~35 bytes of memory until its batch is packed. Packing is a handful of C-level
`tobytes()` calls (plus a byteswap on big-endian machines): no per-point Python work.
"""

from __future__ import annotations

import sys
from array import array
from typing import Any

from producers.errors import TooManyKeys
from schemas.metrics import MAX_KEYS, MAX_SPLITS

BYTES_PER_POINT = 2 + 1 + 8 + 8 + 8 + 8
_BIG_ENDIAN = sys.byteorder == "big"

# array typecodes with the widths the packed format needs
for _code, _size in (("H", 2), ("B", 1), ("q", 8), ("d", 8)):
    if array(_code).itemsize != _size:  # pragma: no cover - exotic platforms only
        raise ImportError(f"array typecode {_code!r} is not {_size} bytes on this platform")


class KeyTable:
    """Interned metric keys and splits of one run; indexes are stable for the run's life."""

    __slots__ = ("keys", "splits", "_key_index", "_split_index")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.splits: list[str] = [""]
        self._key_index: dict[str, int] = {}
        self._split_index: dict[str, int] = {"": 0}

    def key(self, key: str) -> int:
        idx = self._key_index.get(key)
        if idx is None:
            if len(self.keys) >= MAX_KEYS:
                raise TooManyKeys("key", f"a run holds at most {MAX_KEYS} metric keys")
            idx = len(self.keys)
            self.keys.append(key)
            self._key_index[key] = idx
        return idx

    def split(self, split: str) -> int:
        idx = self._split_index.get(split)
        if idx is None:
            if len(self.splits) >= MAX_SPLITS:
                raise TooManyKeys("split", f"a run holds at most {MAX_SPLITS} distinct splits")
            idx = len(self.splits)
            self.splits.append(split)
            self._split_index[split] = idx
        return idx


class Columns:
    """One open batch of points of one run. Appended under the engine lock only."""

    __slots__ = ("key_idx", "split_idx", "steps", "epochs", "timestamps", "values")

    def __init__(self) -> None:
        self.key_idx = array("H")
        self.split_idx = array("B")
        self.steps = array("q")
        self.epochs = array("q")
        self.timestamps = array("q")
        self.values = array("d")

    def __len__(self) -> int:
        return len(self.values)

    def append(self, key: int, split: int, step: int, epoch: int, ts: int, value: float) -> None:
        """One point (the Run hot path inlines this; kept for tests and cold paths)."""
        self.key_idx.append(key)
        self.split_idx.append(split)
        self.steps.append(step)
        self.epochs.append(epoch)
        self.timestamps.append(ts)
        self.values.append(value)


def _le(col: array) -> bytes:  # type: ignore[type-arg]
    if _BIG_ENDIAN and col.itemsize > 1:  # pragma: no cover - big-endian hosts only
        col = array(col.typecode, col)
        col.byteswap()
    return col.tobytes()


def pack(cols: Columns, table: KeyTable) -> dict[str, Any]:
    """The MetricsLogged fields (all but `envelope`) of a batch, as `pack_points` returns.

    Same column format as `schemas.metrics.pack_points`, built from the already-interned
    indexes instead of per-point strings; the key/split tables are cut to the highest index
    the batch uses. The codec checks the invariants (`check_columns`) on encode.

    Columns of unequal length (an asynchronous exception such as KeyboardInterrupt or the
    SIGTERM handler's `Terminated` landed between two appends) are cut to the shortest, so
    the half-appended point is dropped and the rest of the batch survives.
    """
    n = min(
        len(cols.key_idx),
        len(cols.split_idx),
        len(cols.steps),
        len(cols.epochs),
        len(cols.timestamps),
        len(cols.values),
    )
    for col in (
        cols.key_idx,
        cols.split_idx,
        cols.steps,
        cols.epochs,
        cols.timestamps,
        cols.values,
    ):
        del col[n:]
    nkeys = max(cols.key_idx) + 1 if n else 0
    nsplits = max(cols.split_idx) + 1 if n else 0
    return {
        "count": n,
        "keys": table.keys[:nkeys],
        "splits": table.splits[:nsplits],
        "key_idx": _le(cols.key_idx),
        "split_idx": cols.split_idx.tobytes(),
        "steps": _le(cols.steps),
        "epochs": _le(cols.epochs),
        "timestamps": _le(cols.timestamps),
        "values": _le(cols.values),
    }
