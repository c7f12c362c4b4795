"""Order-independent fingerprints of a read-model database (tests, `--verify`, replay checks).

Rule: two databases projected from the same log have equal digests whatever the batch
boundaries, redeliveries or resends were. `raw_count` is the count WITHOUT `FINAL` for the
append-only tables: it proves duplicates never landed, not only that FINAL hides them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from processors.migrate import check_identifier
from schemas.metrics import ROLLUP_SHIFTS

#: table -> columns hashed (FINAL); volatile or boundary-dependent columns are left out
_HASHED: dict[str, str] = {
    "events": "*",
    "experiments": "*",
    "runs": "*",
    "params": "*",
    "tags": "*",
    "attributes": "*",
    "artifacts": "*",
    "artifact_versions": "*",
    "run_versions": "*",
    "lineage": "*",
    "alerts": "*",
    "rejected_events": "*",
    "metric_points": "*",
}
APPEND_ONLY = (
    "events",
    "params",
    "metric_points",
    "alerts",
    "rejected_events",
    "run_versions",
    "artifact_versions",
)


_MERGED = {
    # a producer's current state: its newest version (the offset of its latest event)
    "producers": "SELECT * FROM {db}.producer_versions"
    " ORDER BY version DESC LIMIT 1 BY run_id, producer_id",
    "metric_summary": "SELECT project, experiment_id, key, split, run_id, sum(count),"
    " round(sum(sum_value), 3), min(min_value), max(max_value), min(min_step),"
    " max(max_step), max(last) FROM {db}.metric_summary"
    " GROUP BY project, experiment_id, key, split, run_id",
    # run_state: what searches test (a row with a run state; deleted), not its scale,
    # which migration 0002's backfill and the projection choose differently
    "run_search": "SELECT project, experiment_id, run_id, max(run), max(run_state) > 0,"
    " max(run_state) % 2,"
    " maxMap(params), maxMap(tags), maxMap(m_last), sumMap(m_count),"
    " mapApply((k, v) -> (k, round(v, 3)), sumMap(m_sum)), minMap(m_min), maxMap(m_max),"
    " minMap(m_min_step), maxMap(m_max_step) FROM {db}.run_search"
    " GROUP BY project, experiment_id, run_id",
    "metric_rollup": "SELECT run_id, key, split, level, block, sum(count),"
    " round(sum(sum_value), 3), min(min_value), max(max_value), min(min_step),"
    " max(last) FROM {db}.metric_rollup"
    " GROUP BY run_id, key, split, level, block",
}


def digest(client: Any, database: str, only: Collection[str] | None = None) -> dict[str, Any]:
    """{table: {"count", "hash"[, "raw_count"]}}; the partial-row tables (metric_summary,
    run_search, metric_rollup) merged first. `only`: these tables alone (a database that
    lacks the others)."""
    db = check_identifier(database)
    out: dict[str, Any] = {}
    for table, cols in _HASHED.items():
        if only is not None and table not in only:
            continue
        row = client.query(
            f"SELECT count(), sum(cityHash64(toString(tuple({cols})))) FROM {db}.{table} FINAL"
        ).result_rows[0]
        out[table] = {"count": int(row[0]), "hash": int(row[1])}
        if table in APPEND_ONLY:
            out[table]["raw_count"] = int(
                client.query(f"SELECT count() FROM {db}.{table}").result_rows[0][0]
            )
    for table, merged in _MERGED.items():
        if only is not None and table not in only:
            continue
        row = client.query(
            "SELECT count(), sum(cityHash64(toString(tuple(*)))) FROM"
            f" ({merged.replace('{db}', db)})"
        ).result_rows[0]
        out[table] = {"count": int(row[0]), "hash": int(row[1])}
    return out


def point_totals(client: Any, database: str) -> dict[str, Any]:
    """Per run/key [count, sum(value)] of metric_points, with and without FINAL."""
    db = check_identifier(database)
    out: dict[str, Any] = {}
    for label, final in (("final", " FINAL"), ("raw", "")):
        rows = client.query(
            f"SELECT run_id, key, count(), sum(value) FROM {db}.metric_points"
            f"{final} GROUP BY run_id, key"
        ).result_rows
        out[label] = {f"{r}/{k}": [int(n), float(v)] for r, k, n, v in rows}
    return out


def summary_mismatches(client: Any, database: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The series whose `metric_summary` count differs from their points in `metric_points`
    (FINAL), up to `limit`: none in read models projected by this code. Read models from
    before the worker's fix of its assignment race (a batch could hold offsets twice, see
    processors/README.md) can count some points twice here; `runstream replay` rebuilds
    them."""
    db = check_identifier(database)
    rows = client.query(
        "SELECT run_id, key, split, s.n, p.n FROM (SELECT toString(run_id) AS run_id,"
        " toString(key) AS key, toString(split) AS split, sum(count) AS n"
        f" FROM {db}.metric_summary GROUP BY run_id, key, split) AS s FULL OUTER JOIN"
        " (SELECT toString(run_id) AS run_id, toString(key) AS key, toString(split) AS split,"
        f" toUInt64(count()) AS n FROM {db}.metric_points FINAL GROUP BY run_id, key, split)"
        " AS p USING (run_id, key, split) WHERE s.n != p.n ORDER BY run_id, key, split"
        " LIMIT {limit:UInt32}",
        parameters={"limit": limit},
    ).result_rows
    return [
        {"run_id": r, "key": k, "split": sp, "summary_count": int(a), "points": int(b)}
        for r, k, sp, a, b in rows
    ]


def rollup_mismatches(client: Any, database: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The (series, level) pairs whose `metric_rollup` count differs from their points in
    `metric_points` (read as the bucket view reads them, without FINAL), up to `limit`:
    none in read models projected by this code (migration 0005 fills the table for older
    ones)."""
    db = check_identifier(database)
    rows = client.query(
        "SELECT run_id, key, split, level, r.n, p.n FROM (SELECT toString(run_id) AS run_id,"
        " toString(key) AS key, toString(split) AS split, level, sum(count) AS n"
        f" FROM {db}.metric_rollup GROUP BY run_id, key, split, level) AS r FULL OUTER JOIN"
        " (SELECT toString(run_id) AS run_id, toString(key) AS key, toString(split) AS split,"
        " toUInt64(count()) AS n, arrayJoin(range({levels:UInt8})) AS level"
        f" FROM {db}.metric_points GROUP BY run_id, key, split)"
        " AS p USING (run_id, key, split, level) WHERE r.n != p.n"
        " ORDER BY run_id, key, split, level LIMIT {limit:UInt32}",
        parameters={"limit": limit, "levels": len(ROLLUP_SHIFTS)},
    ).result_rows
    return [
        {
            "run_id": r,
            "key": k,
            "split": sp,
            "level": int(lv),
            "rollup_count": int(a),
            "points": int(b),
        }
        for r, k, sp, lv, a, b in rows
    ]
