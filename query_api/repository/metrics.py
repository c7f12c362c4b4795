"""Metric series reads over `metric_points`: raw pages, SQL-side downsampling, Arrow export.

Rules: points are read with FINAL (the table is a ReplacingMergeTree keyed on point
identity, so redelivered points never count twice); raw pages use keyset pagination on the
table's sort key (page k costs the same as page 1); buckets are computed in SQL and every
bucket keeps min, max, avg, last and count, so a spike is never averaged away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from query_api.repository.store import ReadStore

Axis = Literal["step", "time"]

_X = {"step": "step", "time": "toUnixTimestamp64Milli(timestamp)"}
#: up to this many series, `buckets` aggregates each on its own (see there)
_UNION_SERIES = 32


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
        self, series: Sequence[Series], n: int, lo: int, hi: int
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """`n` equal-width buckets over [lo, hi] per (run_id, key); empty buckets omitted."""
        first = series[0]
        pairs = sorted({(s.run_id, s.key) for s in series})
        params: dict[str, Any] = {"split": first.split, "lo": lo, "hi": hi, "n": n}
        x = _X[first.x]
        # bucket index in Int64 when (x - lo) * n cannot overflow it (~25% cheaper per row
        # than Int128 at 1 M points), else in Int128
        wide = (hi - lo + 1) * n >= 2**62
        bucket = (
            "toUInt32(intDiv((toInt128(xv) - {lo:Int64}) * {n:UInt32}, "
            "toInt128({hi:Int64}) - {lo:Int64} + 1)) AS b "
            if wide
            else "toUInt32(intDiv((xv - {lo:Int64}) * {n:UInt32}, "
            "{hi:Int64} - {lo:Int64} + 1)) AS b "
        )
        aggregates = (
            "min(value), max(value), sum(value), count(), min(xv), max(xv), "
            # last = value at the largest x, ties broken by (seq, idx), packed into one
            # UInt128: a tuple key costs ~4x more at 1 M points (xv >= lo by the WHERE)
            "argMax(value, bitShiftLeft(toUInt128(xv - {lo:Int64}), 64) "
            "+ bitShiftLeft(toUInt128(seq), 20) + idx)"
        )
        # metric_points never holds a duplicate row (processors/README.md): no FINAL
        points = (
            f"FROM {self.store.db}.metric_points WHERE {{series}} "
            "AND split = {split:String} AND xv >= {lo:Int64} AND xv <= {hi:Int64}"
        )
        inner = f"SELECT value, seq, idx, {x} AS xv, {bucket}{points}"
        if len(pairs) <= _UNION_SERIES:
            # one aggregation per series grouped by the bucket alone: grouping on the
            # LowCardinality run_id/key columns costs ~40% more at 1 M points
            parts = []
            for i, (run_id, key) in enumerate(pairs):
                params[f"r{i}"], params[f"k{i}"] = run_id, key
                where = f"run_id = {{r{i}:String}} AND key = {{k{i}:String}}"
                parts.append(
                    f"SELECT toUInt32({i}) AS s, b, {aggregates} FROM "
                    f"({inner.replace('{series}', where)}) GROUP BY b"
                )
            sql = f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY s, b"
        else:
            params["runs"] = sorted({r for r, _ in pairs})
            params["keys"] = sorted({k for _, k in pairs})
            where = "run_id IN {runs:Array(String)} AND key IN {keys:Array(String)}"
            grouped = inner.replace("SELECT value,", "SELECT run_id, key, value,")
            sql = (
                f"SELECT run_id, key, b, {aggregates} FROM "
                f"({grouped.replace('{series}', where)}) "
                "GROUP BY run_id, key, b ORDER BY run_id, key, b"
            )
        width = hi - lo + 1
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in self.store.rows(sql, params):
            if len(pairs) <= _UNION_SERIES:
                ident, b, vmin, vmax, total, count, xmin, xmax, last = row
                run_id, key = pairs[ident]
            else:
                run_id, key, b, vmin, vmax, total, count, xmin, xmax, last = row
            out.setdefault((str(run_id), str(key)), []).append(
                {
                    "bucket": b,
                    "x_start": lo + -(-b * width // n),
                    "x_end": lo + -(-(b + 1) * width // n) - 1,
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
