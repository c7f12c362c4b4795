"""Analytics over many runs, executed in ClickHouse: grouped aggregates of one value per run,
and the rows of a parallel-coordinates view.

Rule: the SQL text is assembled only from fixed fragments of this module, generated aliases
(`g0`, `k0`, `m0`) and the validated database name; every user value (filter values, metric
keys, splits, steps, param/tag names, experiment ids) is a bound parameter (`Binder`).
One value per run: `last`/`min`/`max` read `metric_summary` (never the points); a step or an
epoch reads `metric_points` by its primary key (run_id, key, split, step) and averages the
points at that step (several ranks logging one step are several points). NaN values are
left out of the aggregates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from query_api.analytics import ATTRIBUTE_COLUMNS, AtEpoch, AtStep, GroupKey, MetricColumn
from query_api.repository.store import ReadStore
from query_api.search import Binder, Compiler, Expr

AGGREGATE_SQL = {
    "mean": "avg(m.v)",
    "p50": "quantileExactInclusive(0.5)(m.v)",
    "p90": "quantileExactInclusive(0.9)(m.v)",
    "p95": "quantileExactInclusive(0.95)(m.v)",
    "p99": "quantileExactInclusive(0.99)(m.v)",
    "min": "min(m.v)",
    "max": "max(m.v)",
    "count": "count()",
    "std": "stddevSamp(m.v)",
    "sum": "sum(m.v)",
}
_SUMMARY_VALUE = {
    "last": "tupleElement(max(last), 'value')",
    "min": "min(min_value)",
    "max": "max(max_value)",
}


@dataclass(frozen=True)
class RunScope:
    """Which runs: experiments (all when empty), a parsed filter, live runs only."""

    experiment_ids: tuple[str, ...]
    filter: Expr | None


class AnalyticsRepository:
    def __init__(self, store: ReadStore, project: str | None) -> None:
        self.store = store
        self.project = project

    def _runs(self, binder: Binder, scope: RunScope) -> str:
        """A subquery of the scoped runs: run_id, experiment_id, status, name."""
        db = self.store.db
        conds = ["deleted = 0"]
        if self.project is not None:
            conds.append(f"project = {binder.bind(self.project, 'String')}")
        if scope.experiment_ids:
            conds.append(
                f"experiment_id IN {binder.bind(list(scope.experiment_ids), 'Array(String)')}"
            )
        where = Compiler(db, binder).where(scope.filter)
        return (
            "SELECT r.run_id AS run_id, r.experiment_id AS experiment_id, r.status AS status, "
            f"r.name AS name FROM (SELECT * FROM {db}.runs FINAL WHERE {' AND '.join(conds)}) "
            f"AS r WHERE {where}"
        )

    def _key_join(self, binder: Binder, alias: str, kind: str, name: str) -> str:
        db = self.store.db
        k = binder.bind(name, "String")
        if kind == "param":
            source = f"SELECT run_id, toNullable(value) AS v FROM {db}.params FINAL WHERE key = {k}"
        else:
            source = (
                f"SELECT run_id, toNullable(value) AS v FROM {db}.tags FINAL "
                f"WHERE key = {k} AND deleted = 0"
            )
        return f"LEFT JOIN ({source}) AS {alias} ON {alias}.run_id = b.run_id"

    def _summary_values(self, binder: Binder, key: str, split: str, agg: str, runs: str) -> str:
        k, s = binder.bind(key, "String"), binder.bind(split, "String")
        return (
            f"SELECT run_id, {_SUMMARY_VALUE[agg]} AS v FROM {self.store.db}.metric_summary "
            f"WHERE key = {k} AND split = {s} AND run_id IN (SELECT run_id FROM ({runs})) "
            "GROUP BY run_id"
        )

    def _point_values(
        self, binder: Binder, key: str, split: str, at: AtStep | AtEpoch, runs: str
    ) -> str:
        k, s = binder.bind(key, "String"), binder.bind(split, "String")
        base = (
            f"FROM {self.store.db}.metric_points WHERE run_id IN (SELECT run_id FROM ({runs})) "
            f"AND key = {k} AND split = {s}"
        )
        if isinstance(at, AtStep):
            step = binder.bind(at.step, "Int64")
            return f"SELECT run_id, avg(value) AS v {base} AND step = {step} GROUP BY run_id"
        epoch = binder.bind(at.epoch, "Int64")
        return (
            "SELECT run_id, argMax(sv, step) AS v FROM (SELECT run_id, step, avg(value) AS sv "
            f"{base} AND epoch = {epoch} GROUP BY run_id, step) GROUP BY run_id"
        )

    def aggregate(
        self,
        scope: RunScope,
        metric: str,
        split: str,
        at: str | AtStep | AtEpoch,
        group_by: Sequence[GroupKey],
        aggregates: Sequence[str],
    ) -> list[dict[str, Any]]:
        """One row per group: `group` (key text -> value or None) and each aggregate."""
        binder = Binder()
        runs = self._runs(binder, scope)
        values = (
            self._summary_values(binder, metric, split, at, runs)
            if isinstance(at, str)
            else self._point_values(binder, metric, split, at, runs)
        )
        joins: list[str] = []
        groups: list[str] = []
        for i, g in enumerate(group_by):
            if g.kind == "attribute":
                groups.append(f"toNullable(b.{ATTRIBUTE_COLUMNS[g.name]}) AS g{i}")
            else:
                joins.append(self._key_join(binder, f"k{i}", g.kind, g.name))
                groups.append(f"k{i}.v AS g{i}")
        aggs = list(dict.fromkeys(aggregates))
        select = [*groups, *(f"{AGGREGATE_SQL[a]} AS a_{a}" for a in aggs), "count() AS n_runs"]
        group_names = [f"g{i}" for i in range(len(group_by))]
        group_sql = (
            f" GROUP BY {', '.join(group_names)} ORDER BY "
            + ", ".join(f"{g} ASC NULLS LAST" for g in group_names)
            if group_names
            else ""
        )
        sql = (
            f"SELECT {', '.join(select)} FROM ({runs}) AS b "
            f"INNER JOIN ({values}) AS m ON m.run_id = b.run_id {' '.join(joins)} "
            f"WHERE NOT isNaN(m.v){group_sql}"
        )
        rows = self.store.rows(sql, binder.params)
        out = []
        for row in rows:
            if int(row[-1]) == 0:
                continue  # ungrouped over zero runs: no row rather than a row of NaNs
            item: dict[str, Any] = {"group": {g.text: row[i] for i, g in enumerate(group_by)}}
            for j, a in enumerate(aggs):
                value = row[len(group_by) + j]
                item[a] = int(value) if a == "count" else value
            out.append(item)
        return out

    def parallel_coordinates(
        self,
        scope: RunScope,
        params: Sequence[str],
        metrics: Sequence[MetricColumn],
        limit: int,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Rows of run_id, run_name, each param (text or None) and each metric value (or
        None), ordered by run id; and whether more runs matched than `limit`."""
        binder = Binder()
        runs = self._runs(binder, scope)
        joins: list[str] = []
        select = ["b.run_id AS run_id", "b.name AS run_name"]
        for i, name in enumerate(params):
            joins.append(self._key_join(binder, f"k{i}", "param", name))
            select.append(f"k{i}.v AS c_k{i}")
        for i, col in enumerate(metrics):
            source = self._summary_values(binder, col.key, col.split, col.agg, runs)
            joins.append(
                f"LEFT JOIN (SELECT run_id, toNullable(v) AS v FROM ({source})) AS m{i} "
                f"ON m{i}.run_id = b.run_id"
            )
            select.append(f"m{i}.v AS c_m{i}")
        lim = binder.bind(limit + 1, "UInt64")
        sql = (
            f"SELECT {', '.join(select)} FROM ({runs}) AS b {' '.join(joins)} "
            f"ORDER BY b.run_id LIMIT {lim}"
        )
        rows = self.store.rows(sql, binder.params)
        names = ["run_id", "run_name", *(f"params.{p}" for p in params)]
        names += [m.column for m in metrics]
        out = [dict(zip(names, row)) for row in rows[:limit]]
        return out, len(rows) > limit
