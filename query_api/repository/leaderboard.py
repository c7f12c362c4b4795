"""Leaderboard: the best runs of an experiment by one metric's last/min/max/avg value.

Rule: reads `metric_summary` (merged per run) joined to live runs — never metric points.
Runs without the metric are not ranked; NaN values sort after every number.
"""

from __future__ import annotations

from typing import Any, Literal

from query_api.repository.store import ReadStore
from query_api.search import Binder, Compiler, Expr, metric_key_split

Aggregate = Literal["last", "min", "max", "avg"]

_AGG: dict[str, str] = {
    "last": "tupleElement(max(last), 'value')",
    "min": "min(min_value)",
    "max": "max(max_value)",
    "avg": "sum(sum_value) / sum(count)",
}


class LeaderboardRepository:
    def __init__(self, store: ReadStore, project: str | None) -> None:
        self.store = store
        self.project = project

    def top(
        self,
        experiment_id: str,
        metric: str,
        agg: Aggregate,
        descending: bool,
        limit: int,
        filter_expr: Expr | None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` ranked rows {rank, run_id, name, status, value, step of last}."""
        binder = Binder()
        where = Compiler(self.store.db, binder).where(filter_expr)
        params = binder.params
        key, split = metric_key_split(metric)
        params.update(exp=experiment_id, lkey=key, lsplit=split, lim=limit)
        scope = "deleted = 0 AND experiment_id = {exp:String}"
        if self.project is not None:
            params["project"] = self.project
            scope += " AND project = {project:String}"
        direction = "DESC" if descending else "ASC"
        sql = (
            "SELECT r.run_id AS run_id, r.name AS name, r.status AS status, s.value AS value, "
            "s.n AS count "
            f"FROM (SELECT * FROM {self.store.db}.runs FINAL WHERE {scope}) AS r "
            f"INNER JOIN (SELECT run_id, {_AGG[agg]} AS value, sum(count) AS n "
            f"FROM {self.store.db}.metric_summary WHERE experiment_id = {{exp:String}} "
            "AND key = {lkey:String} AND split = {lsplit:String} GROUP BY run_id) AS s "
            f"ON s.run_id = r.run_id WHERE {where} "
            f"ORDER BY isNaN(s.value), s.value {direction}, r.run_id LIMIT {{lim:UInt64}}"
        )
        rows = self.store.dicts(sql, params)
        for rank, row in enumerate(rows, start=1):
            row["rank"] = rank
        return rows
