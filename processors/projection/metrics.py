"""Columnar projection of MetricsLogged: packed little-endian columns -> Arrow, no per-point
Python work.

Rule: each event costs O(keys) Python; every per-point operation is a numpy call over the
whole batch. Point identity = (run_id, key, split, step, producer_id, seq, idx) with idx the
point's index inside its event, so ranks logging the same step never collapse. The summary
rows are partial aggregates of the batch (count/sum/min/max/last), merged by
AggregatingMergeTree; "last" = max of (step, timestamp, log_offset, idx), i.e. the latest
step, ties broken by time then by log order. A summary row is filed under the project and
experiment of the run as of the event (the caller passes them; the envelope's when the run
is not created yet), so a rank that names another experiment still sums into its run's
experiment, and batch boundaries never change which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from processors.errors import ProjectionFailed
from processors.model import MAX_ABS_EPOCH_MS, Decoded
from schemas.metrics import ROLLUP_SHIFTS

I64 = npt.NDArray[np.int64]
_TS = pa.timestamp("ms", tz="UTC")
_DENSE_LIMIT = 4_000_000


@dataclass
class _Chunk:
    run: int
    owner: int
    producer: int
    seq: int
    offset: int
    keys: npt.NDArray[np.int32]
    splits: npt.NDArray[np.int32]
    steps: I64
    epochs: I64
    timestamps: I64
    values: npt.NDArray[np.float64]


_U1, _U2, _I8, _F8 = np.dtype("u1"), np.dtype("<u2"), np.dtype("<i8"), np.dtype("<f8")


def _column(rec: dict[str, Any], name: str, dtype: np.dtype[Any], n: int) -> npt.NDArray[Any]:
    raw = rec.get(name) or b""
    if len(raw) != n * dtype.itemsize:
        raise ProjectionFailed(f"MetricsLogged.{name}: {len(raw)} bytes for {n} points")
    return np.frombuffer(raw, dtype=dtype)


def _check_index(raw: bytes, idx: npt.NDArray[Any], labels: list[str], what: str) -> None:
    """Every index of one event's points names one of its labels. One label (most events:
    one key, one split) is checked on the bytes and filled without a gather: `add` of a
    12-point one-key event 21 -> 15 µs."""
    if len(labels) == 1 and raw.count(0) == len(raw):
        return
    if idx.size and int(idx.max()) >= len(labels):
        raise ProjectionFailed(f"MetricsLogged: {what} index out of range")


def _label_ids(
    idx: npt.NDArray[Any], labels: list[str], intern: _Interner
) -> npt.NDArray[np.int32]:
    """Batch-wide ids of the labels of one event's points (checked by `_check_index`)."""
    if len(labels) == 1:
        return np.full(idx.size, intern(labels[0]), np.int32)
    ids: npt.NDArray[np.int32] = np.fromiter((intern(x) for x in labels), np.int32, len(labels))
    out: npt.NDArray[np.int32] = ids[idx]
    return out


@dataclass
class _Points:
    """The columns of a batch's points `_rollup` reads (batch order, or table order)."""

    run: npt.NDArray[np.int32]
    key: npt.NDArray[np.int32]
    split: npt.NDArray[np.int32]
    prod: npt.NDArray[np.int32]
    series: I64
    chunk: I64
    steps: I64
    seq: npt.NDArray[np.uint64]
    idx: npt.NDArray[np.uint32]
    values: npt.NDArray[np.float64]


class _Interner:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.values: list[str] = []

    def __call__(self, value: str) -> int:
        i = self.ids.get(value)
        if i is None:
            i = self.ids[value] = len(self.values)
            self.values.append(value)
        return i

    def arrow(self, indices: npt.NDArray[Any]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(
            pa.array(indices.astype(np.int32, copy=False)), pa.array(self.values, pa.string())
        )


def _ranks(values: list[str]) -> npt.NDArray[np.int64]:
    """Position of each interned value in ClickHouse's string order (bytes; for UTF-8 the
    same as Python's code-point order)."""
    ranks = np.empty(len(values), np.int64)
    ranks[sorted(range(len(values)), key=values.__getitem__)] = np.arange(len(values))
    return ranks


class PointBuffer:
    """Accumulates MetricsLogged events of one batch; `build()` gives Arrow + summary rows."""

    def __init__(self) -> None:
        self._chunks: list[_Chunk] = []
        self._runs = _Interner()
        self._keys = _Interner()
        self._splits = _Interner()
        self._producers = _Interner()
        #: (run index, project, experiment_id) a summary row is filed under -> its index
        self._owners: dict[tuple[int, str, str], int] = {}
        self.points = 0

    def add(self, ev: Decoded, owner: tuple[str, str] | None = None) -> int:
        """Validate and stage one event's points; raises ProjectionFailed (nothing staged).
        `owner` = (project, experiment_id) of the run as of the event (default: the
        envelope's)."""
        rec = ev.record
        n = int(rec["count"])
        keys = [str(k) for k in rec.get("keys") or ()]
        splits = [str(s) for s in rec.get("splits") or ()] or [""]
        key_idx = _column(rec, "key_idx", _U2, n)
        split_raw = rec.get("split_idx") or b""
        split_idx = np.zeros(n, np.uint8) if not split_raw else _column(rec, "split_idx", _U1, n)
        steps, epochs, ts = (_column(rec, c, _I8, n) for c in ("steps", "epochs", "timestamps"))
        values = _column(rec, "values", _F8, n)
        if n and (int(ts.min()) < -MAX_ABS_EPOCH_MS or int(ts.max()) > MAX_ABS_EPOCH_MS):
            raise ProjectionFailed("MetricsLogged.timestamps: a value is not epoch ms")
        if n == 0:
            return 0
        _check_index(rec.get("key_idx") or b"", key_idx, keys, "key")
        _check_index(split_raw or bytes(n), split_idx, splits, "split")
        key_ids = _label_ids(key_idx, keys, self._keys)
        split_ids = _label_ids(split_idx, splits, self._splits)
        run = self._runs(ev.env.run_id)
        project, experiment = owner or (ev.env.project, ev.env.experiment_id)
        slot = self._owners.setdefault((run, project, experiment), len(self._owners))
        self._chunks.append(
            _Chunk(
                run,
                slot,
                self._producers(ev.env.producer_id),
                ev.env.seq,
                ev.offset,
                key_ids,
                split_ids,
                steps,
                epochs,
                ts,
                values,
            )
        )
        self.points += n
        return n

    def build(self) -> tuple[pa.Table | None, list[dict[str, Any]], pa.Table | None]:
        """(metric_points rows, metric_summary rows, metric_rollup rows) of the batch."""
        if not self._chunks:
            return None, [], None
        ch = self._chunks
        ns = np.fromiter((c.steps.size for c in ch), np.int64, len(ch))
        total = int(ns.sum())
        starts = np.cumsum(ns) - ns
        run = np.repeat(np.fromiter((c.run for c in ch), np.int32, len(ch)), ns)
        owner = np.repeat(np.fromiter((c.owner for c in ch), np.int32, len(ch)), ns)
        prod = np.repeat(np.fromiter((c.producer for c in ch), np.int32, len(ch)), ns)
        seq = np.repeat(np.fromiter((c.seq for c in ch), np.uint64, len(ch)), ns)
        off = np.repeat(np.fromiter((c.offset for c in ch), np.int64, len(ch)), ns)
        idx = (np.arange(total, dtype=np.int64) - np.repeat(starts, ns)).astype(np.uint32)
        key = np.concatenate([c.keys for c in ch])
        split = np.concatenate([c.splits for c in ch])
        steps = np.concatenate([c.steps for c in ch])
        epochs = np.concatenate([c.epochs for c in ch])
        ts = np.concatenate([c.timestamps for c in ch])
        values = np.concatenate([c.values for c in ch])
        summary = self._summary(owner, key, split, steps, ts, off, idx, values)
        series = self._series(ns, key, split)
        chunk = np.repeat(np.arange(len(ch), dtype=np.int64), ns)
        order = self._table_order(series)
        if order is not None:
            run, key, split, prod = run[order], key[order], split[order], prod[order]
            steps, epochs, ts, values = steps[order], epochs[order], ts[order], values[order]
            seq, idx, series, chunk = seq[order], idx[order], series[order], chunk[order]
        points = _Points(run, key, split, prod, series, chunk, steps, seq, idx, values)
        with np.errstate(all="ignore"):  # inf - inf in a sum is NaN, as in ClickHouse
            rollup = self._rollup(points, by_series=order is not None or total < 2)
        table = pa.table(
            {
                "run_id": self._runs.arrow(run),
                "key": self._keys.arrow(key),
                "split": self._splits.arrow(split),
                "step": pa.array(steps),
                "epoch": pa.array(epochs),
                "timestamp": pa.array(ts, type=pa.int64()).cast(_TS),
                "value": pa.array(values),
                "producer_id": self._producers.arrow(prod),
                "seq": pa.array(seq),
                "idx": pa.array(idx),
            }
        )
        return table, summary, rollup

    def _series(self, ns: I64, key: npt.NDArray[np.int32], split: npt.NDArray[np.int32]) -> I64:
        """Per point, the rank of its (run, key, split) in ClickHouse's order of the three
        strings (the order of `metric_points` and `metric_rollup`). The run part is per event;
        a gather per point only when a batch has more than one key (split)."""
        nk, ns_ = len(self._keys.values), len(self._splits.values)
        runs = np.fromiter((c.run for c in self._chunks), np.int64, len(self._chunks))
        series = np.repeat(_ranks(self._runs.values)[runs] * (nk * ns_), ns)
        if nk > 1:
            series += _ranks(self._keys.values)[key] * ns_
        if ns_ > 1:
            series += _ranks(self._splits.values)[split]
        return series

    def _table_order(self, series: I64) -> npt.NDArray[np.intp] | None:
        """The permutation that puts the points in `metric_points` key order, or None.

        ClickHouse skips sorting an inserted block that is already in table-key order
        (run_id, key, split, step, producer_id, seq, idx): building and inserting 1 M
        SDK-shaped points took 372 instead of 415 ms here (the insert alone: 316 instead
        of 476 ms). Points arrive event by event (one run, producer and seq each, idx
        ascending), so when every event's steps ascend and each event of a run starts
        after the one before it (a training loop), a stable radix sort on (run, key,
        split) is the full order. Otherwise (ranks logging the same steps of one run,
        steps out of order) None: ClickHouse sorts, as before. The test is per event,
        not per point."""
        nk, ns_ = len(self._keys.values), len(self._splits.values)
        if len(self._runs.values) * nk * ns_ > 1 << 16 or series.size < 2:
            return None
        producers = _ranks(self._producers.values)
        last: dict[int, tuple[int, int, int]] = {}  # run -> (max step, producer, seq)
        for c in self._chunks:
            if c.steps.size > 1 and bool((c.steps[1:] < c.steps[:-1]).any()):
                return None
            lo, hi = int(c.steps[0]), int(c.steps[-1])
            prev = last.get(c.run)
            if prev is not None and (lo, int(producers[c.producer]), c.seq) <= prev:
                return None
            last[c.run] = (hi, int(producers[c.producer]), c.seq)
        return np.argsort(series.astype(np.uint16), kind="stable")  # radix sort

    def _summary(
        self,
        owner: npt.NDArray[np.int32],
        key: npt.NDArray[np.int32],
        split: npt.NDArray[np.int32],
        steps: I64,
        ts: I64,
        off: I64,
        idx: npt.NDArray[np.uint32],
        values: npt.NDArray[np.float64],
    ) -> list[dict[str, Any]]:
        nk, ns_ = len(self._keys.values), len(self._splits.values)
        g = (owner.astype(np.int64) * nk + key) * ns_ + split
        space = len(self._owners) * nk * ns_
        if space <= _DENSE_LIMIT:
            groups, gi, size = None, g, space
        else:
            groups, gi = np.unique(g, return_inverse=True)
            size = groups.size
        count = np.bincount(gi, minlength=size)
        finite = ~np.isnan(values)
        sums = np.bincount(gi, weights=np.where(finite, values, 0.0), minlength=size)
        vmin = np.full(size, np.inf)
        vmax = np.full(size, -np.inf)
        np.fmin.at(vmin, gi, values)
        np.fmax.at(vmax, gi, values)
        smin = np.full(size, np.iinfo(np.int64).max)
        smax = np.full(size, np.iinfo(np.int64).min)
        np.minimum.at(smin, gi, steps)
        np.maximum.at(smax, gi, steps)
        cand = steps == smax[gi]
        tmax = np.full(size, np.iinfo(np.int64).min)
        np.maximum.at(tmax, gi[cand], ts[cand])
        cand &= ts == tmax[gi]
        pos = np.full(size, -1, dtype=np.int64)
        np.maximum.at(pos, gi[cand], np.flatnonzero(cand))
        nan_only = ~np.isfinite(vmin) & (np.bincount(gi, weights=finite, minlength=size) == 0)
        vmin[nan_only] = np.nan
        vmax[nan_only] = np.nan
        owners = list(self._owners)
        rows = []
        for slot in np.flatnonzero(count):
            gval = int(groups[slot]) if groups is not None else int(slot)
            o, rest = divmod(gval, nk * ns_)
            k, s = divmod(rest, ns_)
            p = int(pos[slot])
            r, project, experiment = owners[o]
            rows.append(
                {
                    "project": project,
                    "experiment_id": experiment,
                    "key": self._keys.values[k],
                    "split": self._splits.values[s],
                    "run_id": self._runs.values[r],
                    "count": int(count[slot]),
                    "sum_value": float(sums[slot]),
                    "min_value": float(vmin[slot]),
                    "max_value": float(vmax[slot]),
                    "min_step": int(smin[slot]),
                    "max_step": int(smax[slot]),
                    "last": {
                        "step": int(steps[p]),
                        "timestamp": int(ts[p]),
                        "log_offset": int(off[p]),
                        "idx": int(idx[p]),
                        "value": float(values[p]),
                    },
                }
            )
        return rows

    def _rollup(self, p: _Points, by_series: bool) -> pa.Table:
        """`metric_rollup` rows (migration 0005): per (run, key, split, level, block) the
        count, sum, min and max (NaN ignored unless every value is NaN, as ClickHouse's
        min/max), the first step, and `last` = (step, seq << 20 + idx, producer, value) of
        the point that is last by (step, seq, idx), the order of the bucket view's `last`,
        ties (ranks at one step with the same seq) broken by producer id, so the merged row
        is the same whatever the batch boundaries were.

        Two stages, no sort of the points in the usual cases: (1) the points grouped by
        series (`by_series`: already, else a stable sort on the series alone) are cut into
        runs of one event and one block; inside an event steps ascend (checked; else one
        sort of the batch by series, event and step), so a run's last point is its final
        one and each aggregate is a `reduceat`. (2) the runs (~points / 32) are sorted by
        (series, block, last) and merged. Each higher level is built from the level
        below."""
        n = p.steps.size
        perm: npt.NDArray[np.intp] | None = None  # sorted position -> point (None: same)
        if not by_series and n > 1 and bool((p.series[1:] < p.series[:-1]).any()):
            narrow = int(p.series.max()) < 1 << 16  # a radix sort
            perm = np.argsort(p.series.astype(np.uint16) if narrow else p.series, kind="stable")
        series, chunk, steps, values = (
            (p.series, p.chunk, p.steps, p.values)
            if perm is None
            else (p.series[perm], p.chunk[perm], p.steps[perm], p.values[perm])
        )
        block = steps >> ROLLUP_SHIFTS[0]  # an arithmetic shift: floor, also below zero
        change = _changes(series, block, chunk)
        if not bool(((steps[1:] >= steps[:-1]) | change[1:]).all()):
            # an event whose steps do not ascend: sort by series, event and step
            perm = np.lexsort((p.steps, p.chunk, p.series))
            series, chunk = p.series[perm], p.chunk[perm]
            steps, values = p.steps[perm], p.values[perm]
            block = steps >> ROLLUP_SHIFTS[0]
            change = _changes(series, block, chunk)
        starts = np.flatnonzero(change)
        ends = np.append(starts[1:], n) - 1
        src_start = starts if perm is None else perm[starts]
        src_end = ends if perm is None else perm[ends]
        prod = p.prod[src_end]
        runs: dict[str, npt.NDArray[Any]] = {
            "run": p.run[src_start],
            "key": p.key[src_start],
            "split": p.split[src_start],
            "count": (ends - starts + 1).astype(np.uint64),
            "sum_value": np.add.reduceat(values, starts),
            "min_value": np.fmin.reduceat(values, starts),
            "max_value": np.fmax.reduceat(values, starts),
            "min_step": steps[starts],
            "last_step": steps[ends],
            "last_order": (p.seq[src_end] << np.uint64(20)) + p.idx[src_end].astype(np.uint64),
            "last_producer": prod,
            "last_value": values[ends],
        }
        series, block = series[starts], block[starts]
        # (2) runs of one block from several events (ranks, or an event boundary inside a
        # block), put in (series, block, last) order: a group's final run holds its last
        ds, db = np.diff(series), np.diff(block)
        if not bool(((ds > 0) | ((ds == 0) & (db > 0))).all()):
            rank = _ranks(self._producers.values)[prod]
            o = np.lexsort((rank, runs["last_order"], runs["last_step"], block, series))
            runs = {k: v[o] for k, v in runs.items()}
            series, block = series[o], block[o]
        levels = []
        for lvl, shift in enumerate(ROLLUP_SHIFTS):
            if lvl:
                # a level's blocks from the level below (in series and block order): the
                # last point of a block is the last of its highest sub-block
                block = block >> (shift - ROLLUP_SHIFTS[lvl - 1])
            starts = np.flatnonzero(_changes(series, block))
            if starts.size < series.size:
                ends = np.append(starts[1:], block.size) - 1
                runs = {
                    **{k: runs[k][starts] for k in ("run", "key", "split")},
                    "min_step": np.minimum.reduceat(runs["min_step"], starts),
                    "count": np.add.reduceat(runs["count"], starts),
                    "sum_value": np.add.reduceat(runs["sum_value"], starts),
                    "min_value": np.fmin.reduceat(runs["min_value"], starts),
                    "max_value": np.fmax.reduceat(runs["max_value"], starts),
                    **{k: runs[k][ends] for k in _ROLLUP_LAST},
                }
                series, block = series[starts], block[starts]
            levels.append((lvl, block, runs))

        def cat(name: str) -> npt.NDArray[Any]:
            return np.concatenate([r[name] for _, _, r in levels])

        return pa.table(
            {
                "run_id": self._runs.arrow(cat("run")),
                "key": self._keys.arrow(cat("key")),
                "split": self._splits.arrow(cat("split")),
                "level": pa.array(
                    np.concatenate([np.full(b.size, i, np.uint8) for i, b, _ in levels])
                ),
                "block": pa.array(np.concatenate([b for _, b, _ in levels])),
                **{k: pa.array(cat(k)) for k in _ROLLUP_SUMS},
                "last": pa.StructArray.from_arrays(
                    [
                        pa.array(cat("last_step")),
                        pa.array(cat("last_order")),
                        self._producers.arrow(cat("last_producer")),
                        pa.array(cat("last_value")),
                    ],
                    names=["step", "order", "producer", "value"],
                ),
            }
        )


_ROLLUP_SUMS = ("count", "sum_value", "min_value", "max_value", "min_step")
_ROLLUP_LAST = ("last_step", "last_order", "last_producer", "last_value")


def _changes(*cols: I64) -> npt.NDArray[np.bool_]:
    """True where a run of equal values of every column begins."""
    change = np.empty(cols[0].size, bool)
    change[:1] = True
    np.not_equal(cols[0][1:], cols[0][:-1], out=change[1:])
    for col in cols[1:]:
        change[1:] |= col[1:] != col[:-1]
    return change
