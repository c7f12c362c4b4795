"""Per-run metric summaries (`metric_summary`, merged at read time) and small run lookups.

Rule: summaries are merged with the table's own aggregate functions (sum/min/max of the
SimpleAggregateFunction columns), so unmerged parts and redelivered batches read the same.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
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


class KnownRuns:
    """Runs found in `runs`, per read database: (generation, project, run id), LRU.

    Rows never leave `runs` (a deleted run keeps its row, flagged), so a run found once
    exists for as long as its database does; the key carries `ReadStore.generation` (name
    and UUID), so a replay's switch or a database created again under the same name starts
    empty. Only found runs are held: a run not there yet is looked up again next time. Saves
    the lookup (~3 ms on chDB) that every read of a run's metrics starts with."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._lock = threading.Lock()

    def held(
        self, generation: tuple[str, str], project: str | None, run_ids: Sequence[str]
    ) -> set[str]:
        found = set()
        with self._lock:
            for run_id in run_ids:
                k = (generation, project, run_id)
                if k in self._items:
                    self._items.move_to_end(k)
                    found.add(run_id)
        return found

    def add(self, generation: tuple[str, str], project: str | None, run_ids: set[str]) -> None:
        with self._lock:
            for run_id in run_ids:
                k = (generation, project, run_id)
                self._items[k] = None
                self._items.move_to_end(k)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def existing_runs(
    store: ReadStore,
    run_ids: Sequence[str],
    project: str | None,
    known: KnownRuns | None = None,
) -> set[str]:
    """Which of `run_ids` exist (deleted runs included); `known` holds those found before."""
    if not run_ids:
        return set()
    generation = store.generation if known is not None else None
    db = generation[0] if generation is not None else store.db  # the one the key names
    held = (
        set() if known is None or generation is None else known.held(generation, project, run_ids)
    )
    ask = [r for r in run_ids if r not in held]
    if not ask:
        return held
    params: dict[str, Any] = {"ids": ask}
    scope = ""
    if project is not None:
        params["project"] = project
        scope = " AND project = {project:String}"
    rows = store.rows(
        f"SELECT DISTINCT run_id FROM {db}.runs WHERE run_id IN {{ids:Array(String)}}" + scope,
        params,
    )
    found = {str(r[0]) for r in rows}
    if known is not None and generation is not None and found:
        known.add(generation, project, found)
    return held | found


def foreign_owned(
    store: ReadStore, run_ids: Sequence[str], experiment_ids: Sequence[str], project: str
) -> tuple[set[str], set[str]]:
    """The runs and experiments among these ids that exist in another project than
    `project` (deleted ones included): writes naming them must not come from `project`."""

    def owned(table: str, column: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = store.rows(
            f"SELECT DISTINCT {column} FROM {store.db}.{table}"
            f" WHERE {column} IN {{ids:Array(String)}} AND project != {{project:String}}",
            {"ids": list(ids), "project": project},
        )
        return {str(r[0]) for r in rows}

    return owned("runs", "run_id", run_ids), owned("experiments", "experiment_id", experiment_ids)


def require_runs(
    store: ReadStore,
    run_ids: Sequence[str],
    project: str | None,
    known: KnownRuns | None = None,
) -> None:
    """RunNotFound for the first of `run_ids` that does not exist."""
    found = existing_runs(store, run_ids, project, known)
    for run_id in run_ids:
        if run_id not in found:
            raise RunNotFound(run_id)
