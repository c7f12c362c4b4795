"""Runs read model: search (filter + order + pages) and the full detail of one run.

Rule: search reads `runs`, `params`, `tags` and `metric_summary` only — never metric points —
and every user value reaches SQL as a bound parameter (see `query_api.search.compile`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from query_api.errors import RunNotFound
from query_api.repository.store import ReadStore
from query_api.repository.summaries import summaries, summary_json
from query_api.search import Binder, Compiler, Expr, MetricScope, OrderKey

ViewType = Literal["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]

RUN_COLUMNS = (
    "r.run_id AS run_id, r.experiment_id AS experiment_id, r.project AS project, "
    "r.name AS name, r.status AS status, r.status_reason AS status_reason, "
    "toUnixTimestamp64Milli(r.start_time) AS start_time, "
    "toUnixTimestamp64Milli(r.end_time) AS end_time, r.deleted AS deleted, r.notes AS notes, "
    "r.parent_run_id AS parent_run_id, r.fork_step AS fork_step, "
    "r.cloned_from_run_id AS cloned_from_run_id"
)
_VIEW = {"ACTIVE_ONLY": "deleted = 0", "DELETED_ONLY": "deleted = 1", "ALL": "1"}


@dataclass(frozen=True)
class SearchQuery:
    experiment_ids: tuple[str, ...]
    filter: Expr | None
    order_by: tuple[OrderKey, ...]
    view: ViewType
    limit: int
    offset: int


class RunRepository:
    def __init__(self, store: ReadStore, project: str | None) -> None:
        self.store = store
        self.project = project

    def _runs_source(self, params: dict[str, Any], where: Sequence[str]) -> str:
        conds = list(where)
        if self.project is not None:
            params["project"] = self.project
            conds.append("project = {project:String}")
        return f"(SELECT * FROM {self.store.db}.runs FINAL WHERE {' AND '.join(conds)}) AS r"

    # -- search ----------------------------------------------------------------------
    def search(self, q: SearchQuery) -> tuple[list[dict[str, Any]], bool]:
        """One page of runs (with params, tags, latest metrics) and whether more follow."""
        binder = Binder()
        scope = MetricScope(self.project, tuple(q.experiment_ids))
        compiler = Compiler(self.store.db, binder, joined=True, scope=scope)
        where = compiler.where(q.filter)
        order = compiler.order(q.order_by)
        joins = compiler.joins + order.joins
        params = binder.params
        runs_scope = [_VIEW[q.view]]
        if q.experiment_ids:
            params["exp"] = list(q.experiment_ids)
            runs_scope.append("experiment_id IN {exp:Array(String)}")
        params["lim"] = q.limit + 1
        params["off"] = q.offset
        sql = (
            f"SELECT {RUN_COLUMNS} FROM {self._runs_source(params, runs_scope)} "
            f"{' '.join(joins)} WHERE {where} ORDER BY {', '.join(order.terms)} "
            "LIMIT {lim:UInt64} OFFSET {off:UInt64}"
        )
        rows = self.store.dicts(sql, params)
        more = len(rows) > q.limit
        runs = [run_info(r) for r in rows[: q.limit]]
        self._attach_data(runs)
        return runs, more

    def _attach_data(self, runs: list[dict[str, Any]]) -> None:
        """Params, live tags and metric summaries of the page's runs, in one query."""
        ids = [r["run_id"] for r in runs]
        if not ids:
            return
        exps = sorted({r["experiment_id"] for r in runs})
        projects = sorted({r["project"] for r in runs})
        owners = [(r["run_id"], r["experiment_id"]) for r in runs]
        params: dict[str, dict[str, str]] = defaultdict(dict)
        tags: dict[str, dict[str, str]] = defaultdict(dict)
        metrics: dict[str, list[dict[str, Any]]] = defaultdict(list)
        rows = self.store.rows(
            _page_data_sql(self.store.db),
            {"ids": ids, "exps": exps, "projects": projects, "owners": owners},
        )
        # ordered here (bytes order = code point order): ~2 ms less than a SQL ORDER BY
        for row in sorted(rows, key=lambda r: (r[0], r[1], r[2], r[3])):
            kind, run_id, key, value = row[0], row[1], row[2], row[3]
            if kind == 0:
                params[run_id][key] = value
            elif kind == 1:
                tags[run_id][key] = value
            else:
                summary = summary_json(dict(zip(_SUMMARY_FIELDS, row[1:])))
                del summary["run_id"]
                metrics[run_id].append(summary)
        for run in runs:
            rid = run["run_id"]
            run["params"] = params.get(rid, {})
            run["tags"] = tags.get(rid, {})
            run["metrics"] = metrics.get(rid, [])

    def metrics_of(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """run_id -> its metric summaries (one per key and split)."""
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in summaries(self.store, run_ids):
            out[s.pop("run_id")].append(s)
        return out

    def key_values(self, table: str, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """run_id -> {key: value} of `params`, `tags` (live only) or `attributes`."""
        live = " AND deleted = 0" if table == "tags" else ""
        rows = self.store.rows(
            f"SELECT run_id, key, value FROM {self.store.db}.{table} FINAL "
            f"WHERE run_id IN {{ids:Array(String)}}{live} ORDER BY run_id, key",
            {"ids": list(run_ids)},
        )
        out: dict[str, dict[str, str]] = defaultdict(dict)
        for run_id, key, value in rows:
            out[run_id][key] = value
        return out

    # -- one run ---------------------------------------------------------------------
    def info(self, run_id: str) -> dict[str, Any]:
        params: dict[str, Any] = {"id": run_id}
        rows = self.store.dicts(
            f"SELECT {RUN_COLUMNS} FROM {self._runs_source(params, ['run_id = {id:String}'])} "
            "LIMIT 1",
            params,
        )
        if not rows:
            raise RunNotFound(run_id)
        return run_info(rows[0])

    def detail(self, run_id: str) -> dict[str, Any]:
        """Everything about one run except its metric points."""
        run = self.info(run_id)
        run["params"] = self.key_values("params", [run_id]).get(run_id, {})
        run["tags"] = self.key_values("tags", [run_id]).get(run_id, {})
        attrs = self.key_values("attributes", [run_id]).get(run_id, {})
        run["attributes"] = {k: _json_value(v) for k, v in attrs.items()}
        run["metrics"] = [
            {k: v for k, v in s.items() if k != "run_id"} for s in summaries(self.store, [run_id])
        ]
        run["artifacts"] = self.artifacts(run_id)
        run["children"] = self.children(run_id)
        return run

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.store.dicts(
            "SELECT key, uri, size, sha256, content_type, kind, step, metadata, "
            "toUnixTimestamp64Milli(occurred_at) AS created_time "
            f"FROM {self.store.db}.artifacts FINAL "
            "WHERE run_id = {id:String} AND deleted = 0 ORDER BY key",
            {"id": run_id},
        )
        for row in rows:
            row["metadata"] = dict(row["metadata"])
        return rows

    def children(self, run_id: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"id": run_id}
        source = self._runs_source(params, ["parent_run_id = {id:String}", "deleted = 0"])
        return self.store.dicts(
            "SELECT r.run_id AS run_id, r.name AS name, r.status AS status, "
            f"r.fork_step AS fork_step FROM {source} ORDER BY r.start_time, r.run_id",
            params,
        )


_SUMMARY_FIELDS = (
    "run_id",
    "key",
    "split",
    "count",
    "sum_value",
    "min",
    "max",
    "min_step",
    "max_step",
    "last",
    "last_step",
    "last_timestamp",
)


def _page_data_sql(db: str) -> str:
    """Rows `(kind, run_id, key, value-or-split, summary fields…)` of the runs `{ids}`:
    kind 0 = param, 1 = live tag, 2 = metric summary (unordered: sort by the first four).
    `params` is append-only with one row per (run, key) (processors/README.md): read
    without FINAL. Summaries are the rows of each run's own experiment (`{owners}`: run,
    experiment), as search filters them, read with FINAL: within one experiment the sort key
    is (key, split, run_id), so FINAL merges exactly one summary per run, key and split
    (~2 ms less than a GROUP BY); `{projects}`, `{exps}` restrict the read to the head of
    the sort key, and PREWHERE on the page's run ids skips the other runs' rows before
    reading the rest (100 k runs in the experiment: 28 -> 16 ms)."""
    ids = "run_id IN {ids:Array(String)}"
    nums = (
        "toUInt64(0) AS n, toFloat64(0) AS total, toFloat64(0) AS lo, toFloat64(0) AS hi, "
        "toInt64(0) AS first_step, toInt64(0) AS last_step_seen, toFloat64(0) AS last_value, "
        "toInt64(0) AS last_step, toInt64(0) AS last_ts"
    )
    return (
        f"SELECT 0 AS kind, run_id, key, value AS split, {nums} "
        f"FROM {db}.params WHERE {ids} "
        f"UNION ALL SELECT 1, run_id, key, value, {nums} "
        f"FROM {db}.tags FINAL WHERE {ids} AND deleted = 0 "
        "UNION ALL SELECT 2, run_id, key, split, count, sum_value, min_value, max_value, "
        "min_step, max_step, tupleElement(last, 'value'), tupleElement(last, 'step'), "
        "toUnixTimestamp64Milli(tupleElement(last, 'timestamp')) "
        f"FROM {db}.metric_summary FINAL PREWHERE {ids} "
        "WHERE project IN {projects:Array(String)} AND experiment_id IN {exps:Array(String)} AND "
        "(run_id, experiment_id) IN {owners:Array(Tuple(String, String))}"
    )


def _json_value(text: str) -> Any:
    """Attribute values are JSON documents (AttributesLogged); anything else stays text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_info(row: dict[str, Any]) -> dict[str, Any]:
    info = dict(row)
    info["lifecycle_stage"] = "deleted" if info.pop("deleted") else "active"
    return info
