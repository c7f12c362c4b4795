"""Per-run metric summaries (`metric_summary`, merged at read time) and small run lookups.

Rule: summaries are merged with the table's own aggregate functions (sum/min/max of the
SimpleAggregateFunction columns), so unmerged parts and redelivered batches read the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from query_api.errors import RunNotFound
from query_api.repository.store import ReadStore

MERGED = (
    "SELECT run_id, key, split, sum(count) AS n, sum(sum_value) AS total, "
    "min(min_value) AS lo, max(max_value) AS hi, min(min_step) AS first_step, "
    "max(max_step) AS last_step_seen, max(last) AS l FROM {table} WHERE {where} "
    "GROUP BY run_id, key, split"
)
_OUTER = (
    "SELECT run_id, key, split, n AS count, total AS sum_value, lo AS min, hi AS max, "
    "first_step AS min_step, last_step_seen AS max_step, tupleElement(l, 'value') AS last, "
    "tupleElement(l, 'step') AS last_step, "
    "toUnixTimestamp64Milli(tupleElement(l, 'timestamp')) AS last_timestamp"
)


def summaries(
    store: ReadStore,
    run_ids: Sequence[str],
    keys: Sequence[str] | None = None,
    split: str | None = None,
) -> list[dict[str, Any]]:
    """Summary rows of `run_ids` (optionally only `keys` / one `split`), ordered."""
    if not run_ids:
        return []
    params: dict[str, Any] = {"ids": list(run_ids)}
    where = ["run_id IN {ids:Array(String)}"]
    if keys is not None:
        params["keys"] = list(keys)
        where.append("key IN {keys:Array(String)}")
    if split is not None:
        params["split"] = split
        where.append("split = {split:String}")
    rows = store.dicts(
        f"{_OUTER} FROM ("
        + MERGED.format(table=f"{store.db}.metric_summary", where=" AND ".join(where))
        + ") ORDER BY run_id, key, split",
        params,
    )
    return [summary_json(r) for r in rows]


def summary_json(row: dict[str, Any]) -> dict[str, Any]:
    count = int(row["count"])
    return {
        "run_id": row["run_id"],
        "key": row["key"],
        "split": row["split"],
        "last": row["last"],
        "last_step": row["last_step"],
        "last_timestamp": row["last_timestamp"],
        "min": row["min"],
        "max": row["max"],
        "avg": row["sum_value"] / count if count else None,
        "count": count,
        "min_step": row["min_step"],
        "max_step": row["max_step"],
    }


def existing_runs(store: ReadStore, run_ids: Sequence[str], project: str | None) -> set[str]:
    """Which of `run_ids` exist (deleted runs included)."""
    if not run_ids:
        return set()
    params: dict[str, Any] = {"ids": list(run_ids)}
    scope = ""
    if project is not None:
        params["project"] = project
        scope = " AND project = {project:String}"
    rows = store.rows(
        f"SELECT DISTINCT run_id FROM {store.db}.runs WHERE run_id IN {{ids:Array(String)}}"
        + scope,
        params,
    )
    return {str(r[0]) for r in rows}


def require_runs(store: ReadStore, run_ids: Sequence[str], project: str | None) -> None:
    """RunNotFound for the first of `run_ids` that does not exist."""
    found = existing_runs(store, run_ids, project)
    for run_id in run_ids:
        if run_id not in found:
            raise RunNotFound(run_id)
