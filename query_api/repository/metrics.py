"""Metric series reads over `metric_points`: raw pages, SQL-side downsampling, Arrow export.

Rules: points are read with FINAL (the table is a ReplacingMergeTree keyed on point
identity, so redelivered points never count twice); raw pages use keyset pagination on the
table's sort key (page k costs the same as page 1); buckets are computed in SQL and every
bucket keeps min, max, avg, last and count, so a spike is never averaged away. Long step
ranges are bucketed from `metric_rollup`'s per-block aggregates (migration 0005), bucket
edges on block boundaries (`Grid`), so a view's cost follows its bucket count, not the
series' length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from query_api.repository.store import ReadStore
from schemas.metrics import ROLLUP_SHIFTS

Axis = Literal["step", "time"]

_X = {"step": "step", "time": "toUnixTimestamp64Milli(timestamp)"}
#: up to this many series, `buckets` aggregates each on its own (see there)
_UNION_SERIES = 32
#: a rollup level serves a view whose buckets span at least this many of its blocks: bucket
#: edges move to block boundaries, so bucket widths differ by at most 1/16
_ROLLUP_MIN_BLOCKS = 16


@dataclass(frozen=True)
class Grid:
    """`n` buckets over [lo, hi].

    Points (`level` None): bucket b holds the x in [lo + ceil(b * W / n), lo + ceil((b + 1)
    * W / n) - 1] with W = hi - lo + 1 (widths differ by at most 1). On the step axis, when
    a bucket spans at least 16 blocks of a `metric_rollup` level (32, 512 or 8,192 steps:
    from 512 steps per bucket), the largest such level is read instead: the K blocks that
    meet [lo, hi] are cut into n buckets the same way (bucket b: blocks ceil(b * K / n) to
    ceil((b + 1) * K / n) - 1, clipped to [lo, hi]; widths differ by at most one block, 1/16
    of a bucket), every bucket a run of whole blocks, read from the rollup plus the points
    of the partial blocks at the two ends."""

    lo: int
    hi: int
    n: int
    level: int | None = None
    #: False: no point of the series lies below lo (above hi), as when [lo, hi] is the
    #: series' own step range: the partial block at that end is read whole from the rollup.
    #: (That range comes from metric_summary, which a batch writes after its points and
    #: rollup rows: a read between the two can count a point just beyond hi in the last
    #: bucket, its x_max past `end`, until the summary lands.)
    cut_lo: bool = True
    cut_hi: bool = True

    @classmethod
    def of(
        cls, axis: Axis, lo: int, hi: int, n: int, cut: tuple[bool, bool] = (True, True)
    ) -> Grid:
        width = (hi - lo + 1) / n
        levels = [i for i, s in enumerate(ROLLUP_SHIFTS) if width >= _ROLLUP_MIN_BLOCKS << s]
        if axis != "step" or not levels:
            return cls(lo, hi, n)
        return cls(lo, hi, n, levels[-1], *cut)

    @cached_property
    def size(self) -> int:
        """Steps per block of the level read (1: points)."""
        return 1 if self.level is None else 1 << ROLLUP_SHIFTS[self.level]

    @cached_property
    def first(self) -> int:
        """The first block that meets [lo, hi] (of the level read; a step when points)."""
        return self.lo // self.size

    @cached_property
    def blocks(self) -> int:
        """K: the number of blocks that meet [lo, hi] (W when points)."""
        return self.hi // self.size - self.first + 1

    def bounds(self, b: int) -> tuple[int, int]:
        """[x_start, x_end] of bucket b."""
        k, n = self.blocks, self.n
        start = (self.first - (-b * k // n)) * self.size
        end = (self.first - (-(b + 1) * k // n)) * self.size - 1
        return max(start, self.lo), min(end, self.hi)


@dataclass(frozen=True)
class Series:
    """One metric series of one run, optionally cut to `start <= x <= end`."""

    run_id: str
    key: str
    split: str = ""
    x: Axis = "step"
    start: int | None = None
    end: int | None = None

    def where(self, params: dict[str, Any]) -> str:
        params.update(run=self.run_id, key=self.key, split=self.split)
        conds = ["run_id = {run:String}", "key = {key:String}", "split = {split:String}"]
        if self.start is not None:
            params["start"] = self.start
            conds.append(f"{_X[self.x]} >= {{start:Int64}}")
        if self.end is not None:
            params["end"] = self.end
            conds.append(f"{_X[self.x]} <= {{end:Int64}}")
        return " AND ".join(conds)


Cursor = tuple[int, str, int, int]  # (step, producer_id, seq, idx): the table's sort key


class MetricRepository:
    def __init__(self, store: ReadStore) -> None:
        self.store = store

    def history(
        self, s: Series, limit: int, after: Cursor | None
    ) -> tuple[list[dict[str, Any]], Cursor | None]:
        """Up to `limit` points in step order after `after`; the cursor of the last one."""
        params: dict[str, Any] = {"lim": limit}
        where = s.where(params)
        if after is not None:
            params.update(a_step=after[0], a_prod=after[1], a_seq=after[2], a_idx=after[3])
            where += (
                " AND step >= {a_step:Int64} AND (step, producer_id, seq, idx) > "
                "({a_step:Int64}, {a_prod:String}, {a_seq:UInt64}, {a_idx:UInt32})"
            )
        rows = self.store.rows(
            "SELECT step, epoch, toUnixTimestamp64Milli(timestamp), value, producer_id, seq, idx "
            f"FROM {self.store.db}.metric_points FINAL WHERE {where} "
            "ORDER BY step, producer_id, seq, idx LIMIT {lim:UInt64}",
            params,
        )
        points = [{"step": r[0], "epoch": r[1], "timestamp": r[2], "value": r[3]} for r in rows]
        last = rows[-1] if len(rows) == limit else None
        cursor = None if last is None else (int(last[0]), str(last[4]), int(last[5]), int(last[6]))
        return points, cursor

    def arrow_stream(self, s: Series) -> bytes:
        """The whole series as an Arrow IPC stream (step, epoch, timestamp, value)."""
        params: dict[str, Any] = {}
        return self.store.raw(
            "SELECT step, epoch, timestamp, value "
            f"FROM {self.store.db}.metric_points FINAL WHERE {s.where(params)} "
            "ORDER BY step, producer_id, seq, idx",
            params,
            fmt="ArrowStream",
        )

    def x_range(self, series: Sequence[Series]) -> tuple[int, int] | None:
        """min/max of x over the series (steps from `metric_summary`, times from points)."""
        first = series[0]
        params: dict[str, Any] = {
            "runs": sorted({s.run_id for s in series}),
            "keys": sorted({s.key for s in series}),
            "split": first.split,
        }
        sel = (
            "run_id IN {runs:Array(String)} AND key IN {keys:Array(String)} "
            "AND split = {split:String}"
        )
        if first.x == "step":
            sql = (
                f"SELECT min(min_step), max(max_step), count() FROM {self.store.db}.metric_summary "
                f"WHERE {sel}"
            )
        else:
            sql = (
                "SELECT toUnixTimestamp64Milli(min(timestamp)), "
                "toUnixTimestamp64Milli(max(timestamp)), count() "
                f"FROM {self.store.db}.metric_points WHERE {sel}"
            )
        lo, hi, n = self.store.rows(sql, params)[0]
        if not n:
            return None
        lo = first.start if first.start is not None else int(lo)
        hi = first.end if first.end is not None else int(hi)
        return (lo, hi) if lo <= hi else None

    def buckets(
        self, series: Sequence[Series], grid: Grid
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The non-empty buckets of `grid` per (run_id, key), in x order."""
        first = series[0]
        pairs = sorted({(s.run_id, s.key) for s in series})
        params: dict[str, Any] = {"split": first.split, "lo": grid.lo, "hi": grid.hi, "n": grid.n}
        many = len(pairs) > _UNION_SERIES
        ident = "run_id, key, " if many else ""
        if grid.level is None:
            x = _X[first.x]
            # bucket index in Int64 when (x - lo) * n cannot overflow it (~25% cheaper per
            # row than Int128 at 1 M points), else in Int128
            wide = (grid.hi - grid.lo + 1) * grid.n >= 2**62
            bucket = (
                "toUInt32(intDiv((toInt128(xv) - {lo:Int64}) * {n:UInt32}, "
                "toInt128({hi:Int64}) - {lo:Int64} + 1)) AS b "
                if wide
                else "toUInt32(intDiv((xv - {lo:Int64}) * {n:UInt32}, "
                "{hi:Int64} - {lo:Int64} + 1)) AS b "
            )
            # metric_points never holds a duplicate row (processors/README.md): no FINAL
            source = (
                f"SELECT {ident}value, seq, idx, {x} AS xv, {bucket}"
                f"FROM {self.store.db}.metric_points WHERE {{series}} "
                "AND split = {split:String} AND xv >= {lo:Int64} AND xv <= {hi:Int64}"
            )
            aggregates = (
                "min(value), max(value), sum(value), count(), min(xv), max(xv), "
                # last = value at the largest x, ties broken by (seq, idx), packed into one
                # UInt128: a tuple key costs ~4x more at 1 M points (xv >= lo by the WHERE)
                "argMax(value, bitShiftLeft(toUInt128(xv - {lo:Int64}), 64) "
                "+ bitShiftLeft(toUInt128(seq), 20) + idx)"
            )
        else:
            source = self._rollup_source(grid, ident, params)
            aggregates = "min(mn), max(mx), sum(sm), sum(ct), min(x0), max(x1), argMax(lv, lk)"
        if not many:
            # one aggregation per series grouped by the bucket alone: grouping on the
            # LowCardinality run_id/key columns costs ~40% more at 1 M points
            parts = []
            for i, (run_id, key) in enumerate(pairs):
                params[f"r{i}"], params[f"k{i}"] = run_id, key
                where = f"run_id = {{r{i}:String}} AND key = {{k{i}:String}}"
                parts.append(
                    f"SELECT toUInt32({i}) AS s, b, {aggregates} FROM "
                    f"({source.replace('{series}', where)}) GROUP BY b"
                )
            if len(parts) == 1:  # its aggregation alone: the union's outer sort costs ~0.7 ms
                sql = parts[0] + " ORDER BY b"
            else:
                sql = f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY s, b"
        else:
            params["runs"] = sorted({r for r, _ in pairs})
            params["keys"] = sorted({k for _, k in pairs})
            where = "run_id IN {runs:Array(String)} AND key IN {keys:Array(String)}"
            sql = (
                f"SELECT run_id, key, b, {aggregates} FROM "
                f"({source.replace('{series}', where)}) "
                "GROUP BY run_id, key, b ORDER BY run_id, key, b"
            )
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in self.store.rows(sql, params):
            if many:
                run_id, key, b, vmin, vmax, total, count, xmin, xmax, last = row
            else:
                i, b, vmin, vmax, total, count, xmin, xmax, last = row
                run_id, key = pairs[i]
            x_start, x_end = grid.bounds(b)
            out.setdefault((str(run_id), str(key)), []).append(
                {
                    "bucket": b,
                    "x_start": x_start,
                    "x_end": x_end,
                    "x_min": xmin,
                    "x_max": xmax,
                    "min": vmin,
                    "max": vmax,
                    # ClickHouse's avg is this same Float64 division
                    "avg": total / count,
                    "last": last,
                    "count": count,
                }
            )
        return out

    def _rollup_source(self, grid: Grid, ident: str, params: dict[str, Any]) -> str:
        """Rows (b, mn, mx, sm, ct, x0, x1, lv, lk) of the series `{series}` over `grid`:
        one per `metric_rollup` row of the blocks inside [lo, hi], one per point of the
        partial blocks at the ends it cuts (the first block is in bucket 0, the last in n -
        1).
        lk orders `last` as the rollup does: (step, seq << 20 + idx) in a UInt128, steps
        relative to the first block's start (no step in [lo, hi] is below it)."""
        size = grid.size
        # the blocks read from the rollup: those inside [lo, hi], and those it cuts at an
        # end that has no point beyond it
        inner0 = -(-grid.lo // size) if grid.cut_lo else grid.first
        inner1 = (grid.hi + 1) // size - 1 if grid.cut_hi else grid.hi // size
        params.update(level=grid.level, b0=inner0, b1=inner1, first=grid.first, k=grid.blocks)
        params["origin"] = grid.first * size
        db = self.store.db
        # Int64 arithmetic unless a product or difference could overflow it
        i128 = grid.blocks * grid.n >= 2**62 or grid.hi - grid.first * size >= 2**62
        wide = "toInt128" if i128 else ""
        parts = [
            f"SELECT {ident}toUInt32(intDiv(({wide}(block) - {{first:Int64}}) * {{n:UInt32}}, "
            "{k:UInt64})) AS b, min_value AS mn, max_value AS mx, sum_value AS sm, count AS ct, "
            "min_step AS x0, last.step AS x1, last.value AS lv, "
            f"bitShiftLeft(toUInt128({wide}(last.step) - {{origin:Int64}}), 64) + last.order AS lk "
            f"FROM {db}.metric_rollup WHERE {{series}} AND split = {{split:String}} "
            "AND level = {level:UInt8} AND block >= {b0:Int64} AND block <= {b1:Int64}"
        ]
        edges = []
        if grid.lo < inner0 * size:
            params["e0"] = inner0 * size - 1
            edges.append("(step >= {lo:Int64} AND step <= {e0:Int64})")
        if (inner1 + 1) * size <= grid.hi:
            params["e1"] = (inner1 + 1) * size
            edges.append("(step >= {e1:Int64} AND step <= {hi:Int64})")
        if edges:
            parts.append(
                f"SELECT {ident}if(step <= {{lo:Int64}} + {size - 1}, toUInt32(0), "
                "toUInt32({n:UInt32} - 1)) AS b, value AS mn, value AS mx, value AS sm, "
                "toUInt64(1) AS ct, step AS x0, step AS x1, value AS lv, "
                f"bitShiftLeft(toUInt128({wide}(step) - {{origin:Int64}}), 64) "
                "+ (bitShiftLeft(seq, 20) + idx) AS lk "
                f"FROM {db}.metric_points WHERE {{series}} AND split = {{split:String}} "
                f"AND ({' OR '.join(edges)})"
            )
        return " UNION ALL ".join(parts)

    def sampled(
        self, series: Sequence[Series], n: int, lo: int, hi: int
    ) -> dict[str, list[dict[str, Any]]]:
        """run_id -> real points (step, timestamp, value) sampling each series over the steps
        [lo, hi]: `n` equal-width step buckets, the last point of every non-empty bucket,
        plus the series' first point in the range; in step order. Several points at one
        step (ranks) are one sample: the last by (seq, idx)."""
        first = series[0]
        params: dict[str, Any] = {
            "runs": sorted({s.run_id for s in series}),
            "key": first.key,
            "split": first.split,
            "lo": lo,
            "hi": hi,
            "n": n,
        }
        # the same order key as `buckets`' last, packed into one UInt128 (step >= lo)
        order = (
            "bitShiftLeft(toUInt128(step - {lo:Int64}), 64) + bitShiftLeft(toUInt128(seq), 20) "
            "+ idx"
        )
        point = "(step, toUnixTimestamp64Milli(timestamp), value)"
        sql = (
            f"SELECT run_id, b, argMin({point}, {order}), argMax({point}, {order}) FROM ("
            "SELECT run_id, step, timestamp, value, seq, idx, "
            "toUInt32(intDiv((toInt128(step) - {lo:Int64}) * {n:UInt32}, "
            "toInt128({hi:Int64}) - {lo:Int64} + 1)) AS b "
            # metric_points never holds a duplicate row (processors/README.md): no FINAL
            f"FROM {self.store.db}.metric_points "
            "WHERE run_id IN {runs:Array(String)} AND key = {key:String} "
            "AND split = {split:String} AND step >= {lo:Int64} AND step <= {hi:Int64}"
            ") GROUP BY run_id, b ORDER BY run_id, b"
        )
        out: dict[str, list[dict[str, Any]]] = {}
        for run_id, _b, head, tail in self.store.rows(sql, params):
            points = out.setdefault(str(run_id), [])
            if not points and head[0] != tail[0]:
                points.append({"step": head[0], "timestamp": head[1], "value": head[2]})
            points.append({"step": tail[0], "timestamp": tail[1], "value": tail[2]})
        return out
