"""MetricsLogged packed columns: pack, check and unpack metric points.

Rule: a MetricsLogged batch carries its points as packed little-endian columns (see the
record doc in `avro/MetricsLogged.avsc`); point i is
``(keys[key_idx[i]], splits[split_idx[i]], steps[i], epochs[i], timestamps[i], values[i])``
and its identity is ``(run_id, key, split, step, producer_id, seq, i)``.

Pure Python (`struct` to pack, `array` to unpack); numpy is used only by
`unpack_points_numpy` and when a caller passes numpy arrays to `pack_points`, never imported
at module import.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Union

from .errors import InvalidEvent

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "MAX_KEYS",
    "MAX_SPLITS",
    "NO_EPOCH",
    "MetricArrays",
    "MetricColumns",
    "MetricPoint",
    "check_columns",
    "pack_points",
    "parse_series_key",
    "series_key",
    "unpack_points",
    "unpack_points_numpy",
]

NO_EPOCH = -1
"""`epochs` value meaning "no epoch"."""
MAX_KEYS = 65536
"""At most this many distinct keys per batch (uint16 key_idx)."""
MAX_SPLITS = 256
"""At most this many distinct splits per batch (uint8 split_idx)."""


def series_key(key: str, split: str) -> str:
    """One string for a (metric key, split) pair: `<len(key)>:<key><split>`.

    The map key of a series in the `run_search` read model (written by the processors, read
    by the query API: this is their contract). Unambiguous whatever characters a key holds;
    the length counts code points (ClickHouse: `lengthUTF8`)."""
    return f"{len(key)}:{key}{split}"


def parse_series_key(text: str) -> tuple[str, str]:
    """The (key, split) of a `series_key`."""
    n, _, rest = text.partition(":")
    size = int(n)
    return rest[:size], rest[size:]


#: `metric_rollup` levels (migration 0005, written by the processors, read by the query
#: API: their contract): level l holds per-series aggregates of the steps
#: [b * 2**ROLLUP_SHIFTS[l], (b + 1) * 2**ROLLUP_SHIFTS[l] - 1] in its row of block b
#: (32, 512 and 8,192 steps).
ROLLUP_SHIFTS = (5, 9, 13)


_EVENT = "MetricsLogged"
_SWAP = sys.byteorder != "little"
_WIDTHS = (
    ("key_idx", 2),
    ("split_idx", 1),
    ("steps", 8),
    ("epochs", 8),
    ("timestamps", 8),
    ("values", 8),
)
_ALL_BYTES = bytes(range(256))

Record = Mapping[str, Any]
LabelColumn = Union[Sequence[str], str, "npt.NDArray[Any]"]
"""One label for all points, or one per point."""
IntColumn = Union[Sequence[int], int, "npt.NDArray[Any]"]
"""One int64 for all points, or one per point (a numpy integer array is packed directly)."""
FloatColumn = Union[Sequence[float], "npt.NDArray[Any]"]
"""One float64 per point (a numpy array is packed directly)."""


class MetricPoint(NamedTuple):
    """One metric point; `position` is its index i in the batch (part of its identity)."""

    position: int
    key: str
    split: str
    step: int
    epoch: int
    timestamp: int
    value: float


class MetricColumns(NamedTuple):
    """The points of a batch as columns (all of the same length)."""

    key: Sequence[str]
    split: Sequence[str]
    step: Sequence[int]
    epoch: Sequence[int]
    timestamp: Sequence[int]
    value: Sequence[float]

    def points(self) -> Iterator[MetricPoint]:
        """The points, one `MetricPoint` each, in batch order."""
        for i, row in enumerate(zip(*self)):
            yield MetricPoint(i, *row)


class MetricArrays(NamedTuple):
    """The points of a batch as numpy arrays (numeric columns are zero-copy, read-only)."""

    key: npt.NDArray[np.object_]
    split: npt.NDArray[np.object_]
    step: npt.NDArray[np.int64]
    epoch: npt.NDArray[np.int64]
    timestamp: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]


def _from_le(code: str, data: bytes) -> array[Any]:
    arr = array(code)
    arr.frombytes(data)
    if _SWAP:
        arr.byteswap()
    return arr


def _is_numpy(seq: object) -> bool:
    return hasattr(seq, "dtype") and hasattr(seq, "astype") and hasattr(seq, "tobytes")


_STRUCTS: dict[tuple[str, int], struct.Struct] = {}


def _struct(code: str, n: int) -> struct.Struct:
    """A cached little-endian `struct.Struct` for n items (bounded cache: batch sizes repeat)."""
    packer = _STRUCTS.get((code, n))
    if packer is None:
        if len(_STRUCTS) >= 256:
            _STRUCTS.clear()
        packer = _STRUCTS[(code, n)] = struct.Struct(f"<{n}{code}")
    return packer


def _labels(labels: LabelColumn, n: int, width: int, field: str) -> tuple[list[str], bytes]:
    """Distinct labels (in first-seen order) and the packed per-point index column."""
    if isinstance(labels, str):
        return [labels], bytes(width * n)
    if _is_numpy(labels):
        labels = [str(x) for x in labels]
    if len(labels) != n:
        raise InvalidEvent(field, f"has {len(labels)} entries for {n} values", _EVENT)
    position: dict[str, int] = dict.fromkeys(labels, 0)
    if len(position) <= 1:
        return list(position), bytes(width * n)
    for i, label in enumerate(position):
        position[label] = i
    limit = MAX_SPLITS if width == 1 else MAX_KEYS
    if len(position) > limit:
        raise InvalidEvent(field, f"{len(position)} distinct values, at most {limit}", _EVENT)
    if len(position) <= 256:  # one byte per index; uint16 LE = that byte then a zero byte
        low = bytes(map(position.__getitem__, labels))
        if width == 1:
            return list(position), low
        column = bytearray(2 * n)
        column[0::2] = low
        return list(position), bytes(column)
    return list(position), _struct("H", n).pack(*map(position.__getitem__, labels))


def _int64(column: IntColumn, n: int, field: str) -> bytes:
    if isinstance(column, int) and not isinstance(column, bool):
        try:
            return struct.pack("<q", column) * n
        except struct.error as exc:
            raise InvalidEvent(field, f"{column} is out of range for int64", _EVENT) from exc
    return _numeric(column, n, field, "q", "<i8", "iu")


def _numeric(column: Any, n: int, field: str, code: str, dtype: str, kinds: str) -> bytes:
    """Pack a per-point column (a sequence or a numpy array) as little-endian `code` items."""
    if isinstance(column, (str, bytes)) or not hasattr(column, "__len__"):
        raise InvalidEvent(field, f"expected a sequence, got {type(column).__name__}", _EVENT)
    if len(column) != n:
        raise InvalidEvent(field, f"has {len(column)} entries for {n} values", _EVENT)
    if _is_numpy(column):
        if column.dtype.kind not in kinds:
            raise InvalidEvent(field, f"expected numbers, got dtype {column.dtype}", _EVENT)
        return bytes(column.astype(dtype, copy=False).tobytes())
    try:
        return _struct(code, n).pack(*column)
    except (struct.error, TypeError) as exc:
        raise InvalidEvent(field, f"expected {dtype} numbers: {exc}", _EVENT) from None


def pack_points(
    keys: LabelColumn,
    values: FloatColumn,
    steps: IntColumn,
    *,
    timestamps: IntColumn,
    epochs: IntColumn = NO_EPOCH,
    splits: LabelColumn = "",
) -> dict[str, Any]:
    """Pack points into the MetricsLogged columns (every field except `envelope`).

    Each of `keys`, `splits`, `steps`, `timestamps` and `epochs` is either one value for all
    points or one per point; `values` decides the number of points. numpy arrays are taken
    as they are (fast path); anything else goes through `array`.

    Example:
        ``MetricsLogged(envelope=env, **pack_points(["loss", "acc"], [0.5, 0.9], 7,
        timestamps=now_ms, splits="train"))``

    Raises:
        InvalidEvent: a column of the wrong length or type, naming the column.
    """
    n = len(values)
    key_list, key_idx = _labels(keys, n, 2, "keys")
    split_list, split_idx = _labels(splits, n, 1, "splits")
    return {
        "count": n,
        "keys": key_list,
        "splits": split_list,
        "key_idx": key_idx,
        "split_idx": split_idx,
        "steps": _int64(steps, n, "steps"),
        "epochs": _int64(epochs, n, "epochs"),
        "timestamps": _int64(timestamps, n, "timestamps"),
        "values": _numeric(values, n, "values", "d", "<f8", "fiub"),
    }


def _fields(record: Any) -> Record:
    if isinstance(record, Mapping):
        return record
    return {name: getattr(record, name) for name in ("count", "keys", "splits", *dict(_WIDTHS))}


def _bad_index(column: bytes, width: int, size: int) -> bool:
    """True when some index in the packed `column` is >= size."""
    if width == 1:
        return size < 256 and bool(column.translate(None, _ALL_BYTES[:size]))
    if size <= 256:  # every high byte 0, every low byte < size
        return bool(column[1::2].translate(None, b"\x00")) or bool(
            column[0::2].translate(None, _ALL_BYTES[:size])
        )
    return size < MAX_KEYS and max(_from_le("H", column)) >= size


def check_columns(record: Any) -> None:
    """Check the packed-column invariants of a MetricsLogged record (or event).

    Column lengths match `count`, keys and splits are distinct and every index points into
    them. Called by the codec on encode (refuses the event) and on decode (the message is
    undecodable).

    Raises:
        InvalidEvent: naming the column at fault.
    """
    rec = _fields(record)
    count = rec["count"]
    if count < 0:
        raise InvalidEvent("count", f"must be >= 0, got {count}", _EVENT)
    for field, width in _WIDTHS:
        size = len(rec[field])
        if size != width * count:
            raise InvalidEvent(
                field, f"has {size} bytes, expected count x {width} = {width * count}", _EVENT
            )
    for field, width, limit in (("keys", 2, MAX_KEYS), ("splits", 1, MAX_SPLITS)):
        labels = rec[field]
        if len(labels) > limit:
            raise InvalidEvent(field, f"has {len(labels)} entries, at most {limit}", _EVENT)
        if len(set(labels)) != len(labels):
            raise InvalidEvent(field, "entries must be distinct", _EVENT)
        if count and _bad_index(rec[field[:-1] + "_idx"], width, len(labels)):
            raise InvalidEvent(
                field[:-1] + "_idx", f"an index is out of range for {len(labels)} {field}", _EVENT
            )


def unpack_points(record: Any) -> MetricColumns:
    """The points of a MetricsLogged record (dict from `decode_record`) or event, as columns.

    Numeric columns are `array.array` objects (sequences of int / float); `key` and `split`
    are lists of str. The record must satisfy `check_columns` (decode guarantees it).
    """
    rec = _fields(record)
    count = rec["count"]
    keys, splits = rec["keys"], rec["splits"]
    if len(keys) == 1:
        key_col = keys * count if isinstance(keys, list) else list(keys) * count
    else:
        key_col = list(map(keys.__getitem__, _from_le("H", rec["key_idx"])))
    if len(splits) == 1:
        split_col = splits * count if isinstance(splits, list) else list(splits) * count
    else:
        split_col = list(map(splits.__getitem__, rec["split_idx"]))
    return MetricColumns(
        key_col,
        split_col,
        _from_le("q", rec["steps"]),
        _from_le("q", rec["epochs"]),
        _from_le("q", rec["timestamps"]),
        _from_le("d", rec["values"]),
    )


def unpack_points_numpy(record: Any) -> MetricArrays:
    """Like `unpack_points` but numpy arrays (needs numpy; numeric columns are zero-copy)."""
    import numpy as np

    rec = _fields(record)
    keys = np.array(list(rec["keys"]) or [""], dtype=object)
    splits = np.array(list(rec["splits"]) or [""], dtype=object)
    return MetricArrays(
        keys[np.frombuffer(rec["key_idx"], dtype="<u2")],
        splits[np.frombuffer(rec["split_idx"], dtype="u1")],
        np.frombuffer(rec["steps"], dtype="<i8"),
        np.frombuffer(rec["epochs"], dtype="<i8"),
        np.frombuffer(rec["timestamps"], dtype="<i8"),
        np.frombuffer(rec["values"], dtype="<f8"),
    )
