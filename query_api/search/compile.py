"""Compile a parsed filter / order-by into ClickHouse SQL over the run read models.

Two targets:
- `RowCompiler` (run search) compiles against `run_search`, one row per run (migration
  0002): a metric is the `last` value in the row's `m_last` map (map key:
  `schemas.metrics.series_key`), a param an entry of `params`, a tag an entry of `tags`
  whose latest change did not delete it, an attribute a column or an element of the `run`
  tuple. A run without the key has NULL there, which no comparison accepts (the grammar has
  no NOT). Filter and order read one table: no join, no subquery. Never address a map
  or tuple of `run_search` by subcolumn (`s.m_last.keys`, `s.m_last.values`): with FINAL,
  ClickHouse 26.9 reads subcolumns from the unmerged partial rows (seen: a run's earlier
  `last` came back, and a 100 k-run search looked 2.7x faster for it); functions of the
  whole column (`mapContains`, `m[k]`, `tupleElement`) see the merged value.
- `Compiler` (leaderboard, analytics) writes a WHERE over the `runs` row (`<alias>.`,
  default `r`) whose metric, param and tag tests are `run_id IN (subquery)` over
  `metric_summary`, `params` and `tags` (same semantics), so those queries never scan
  metric points either. `metric_summary` is read with `FINAL` filtered on its sorting-key
  columns `key` and `split` in PREWHERE.

Metric keys address a split as `key@split` (`@` is not a key character); a bare key means
the default split "".

Rule: every user value is a server-side bound parameter (`{p0:String}`, `{p1:Float64}`,
`{p2:Array(String)}`); the only interpolated identifiers are the database (validated by the
caller) and fixed column names from this module — injection is impossible by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from query_api.search.ast import And, Comparison, Expr, Key, Or, OrderKey
from schemas.metrics import series_key

# Run attribute -> column of the `runs` table.
ATTRIBUTE_COLUMNS: dict[str, str] = {
    "run_id": "run_id",
    "run_name": "name",
    "status": "status",
    "experiment_id": "experiment_id",
    "start_time": "start_time",
    "end_time": "end_time",
}
_TIME_COLUMNS = frozenset({"start_time", "end_time"})
_SQL_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass
class Binder:
    """Allocates server-side parameter names; `params` goes to `client.query(parameters=)`."""

    prefix: str = "p"
    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, ch_type: str) -> str:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return "{" + name + ":" + ch_type + "}"


@dataclass(frozen=True)
class CompiledOrder:
    """The ORDER BY terms of an order-by list."""

    terms: tuple[str, ...]


def metric_key_split(name: str) -> tuple[str, str]:
    """`loss@val` -> ("loss", "val"); `loss` -> ("loss", "")."""
    key, at, split = name.rpartition("@")
    return (key, split) if at else (name, "")


class Compiler:
    """Compiles filters against the read models of one database (`run_id IN` subqueries)."""

    def __init__(self, database: str, binder: Binder, run_alias: str = "r") -> None:
        self.db = database
        self.binder = binder
        self.r = run_alias

    # -- filter ----------------------------------------------------------------------
    def where(self, expr: Expr | None) -> str:
        """A boolean SQL expression ('1' for no filter)."""
        if expr is None:
            return "1"
        if isinstance(expr, And):
            return "(" + " AND ".join(self.where(i) for i in expr.items) + ")"
        if isinstance(expr, Or):
            return "(" + " OR ".join(self.where(i) for i in expr.items) + ")"
        return self._comparison(expr)

    def _comparison(self, c: Comparison) -> str:
        if c.key.entity == "attribute":
            return self._attribute(c)
        source, value_sql = self._entity_source(c.key)
        run_ids = f"SELECT run_id FROM {source}"
        if c.op == "IS NULL":
            return f"{self.r}.run_id NOT IN ({run_ids})"
        if c.op == "IS NOT NULL":
            return f"{self.r}.run_id IN ({run_ids})"
        if c.key.entity == "metric":
            test = f"{value_sql} {_SQL_OPS[c.op]} {self.binder.bind(c.value, 'Float64')}"
            return f"{self.r}.run_id IN ({run_ids} WHERE {test})"
        test = self._string_test(value_sql, c)
        return f"{self.r}.run_id IN ({run_ids} WHERE {test})"

    def _entity_source(self, key: Key) -> tuple[str, str]:
        """A subquery with one row per run holding the key, and the expression of its value."""
        if key.entity == "metric":
            name, split = metric_key_split(key.name)
            conds = [
                f"key = {self.binder.bind(name, 'String')}",
                f"split = {self.binder.bind(split, 'String')}",
            ]
            return (
                "(SELECT run_id, experiment_id, tupleElement(last, 'value') AS v "
                f"FROM {self.db}.metric_summary FINAL PREWHERE {' AND '.join(conds)})",
                "v",
            )
        k = self.binder.bind(key.name, "String")
        if key.entity == "param":
            # params is append-only, one row per (run, key) (processors/README.md): no FINAL
            return f"(SELECT run_id, value AS v FROM {self.db}.params WHERE key = {k})", "v"
        return (
            f"(SELECT run_id, value AS v FROM {self.db}.tags FINAL "
            f"WHERE key = {k} AND deleted = 0)",
            "v",
        )

    def _string_test(self, column: str, c: Comparison) -> str:
        if c.op in ("IN", "NOT IN"):
            values = list(c.value) if isinstance(c.value, tuple) else []
            return f"{column} {c.op} {self.binder.bind(values, 'Array(String)')}"
        if c.op == "ILIKE":
            return f"{column} ILIKE {self.binder.bind(c.value, 'String')}"
        if c.op == "LIKE":
            return f"{column} LIKE {self.binder.bind(c.value, 'String')}"
        return f"{column} {_SQL_OPS[c.op]} {self.binder.bind(c.value, 'String')}"

    def _attribute_column(self, name: str) -> str:
        return f"{self.r}.{ATTRIBUTE_COLUMNS[name]}"

    def _attribute(self, c: Comparison) -> str:
        column = self._attribute_column(c.key.name)
        if c.op == "IS NULL":
            return f"isNull({column})"
        if c.op == "IS NOT NULL":
            return f"isNotNull({column})"
        if c.key.name in _TIME_COLUMNS:
            bound = self.binder.bind(c.value, "Int64")
            return f"{column} {_SQL_OPS[c.op]} fromUnixTimestamp64Milli({bound}, 'UTC')"
        return self._string_test(column, c)


class RowCompiler(Compiler):
    """Compiles filters and order-by lists against `run_search` rows (alias `s`)."""

    _RUN_TUPLE = frozenset({"run_name", "status", "start_time", "end_time"})

    def __init__(self, database: str, binder: Binder, run_alias: str = "s") -> None:
        super().__init__(database, binder, run_alias)
        self._values: dict[tuple[str, str], str] = {}

    def _attribute_column(self, name: str) -> str:
        column = ATTRIBUTE_COLUMNS[name]
        if name in self._RUN_TUPLE:
            return f"tupleElement({self.r}.run, '{column}')"
        return f"{self.r}.{column}"

    def _comparison(self, c: Comparison) -> str:
        if c.key.entity == "attribute":
            return self._attribute(c)
        value = self.value(c.key)
        if c.op == "IS NULL":
            return f"isNull({value})"
        if c.op == "IS NOT NULL":
            return f"isNotNull({value})"
        if c.key.entity == "metric":
            return f"{value} {_SQL_OPS[c.op]} {self.binder.bind(c.value, 'Float64')}"
        return self._string_test(value, c)

    def value(self, key: Key) -> str:
        """The value of a metric, param or tag key in the row (NULL without it); a key both
        filtered and ordered on binds its name once."""
        ident = (key.entity, key.name)
        expr = self._values.get(ident)
        if expr is None:
            expr = self._values[ident] = self._row_value(key)
        return expr

    def _row_value(self, key: Key) -> str:
        r = self.r
        if key.entity == "metric":
            k = self.binder.bind(series_key(*metric_key_split(key.name)), "String")
            return f"if(mapContains({r}.m_last, {k}), tupleElement({r}.m_last[{k}], 'value'), NULL)"
        k = self.binder.bind(key.name, "String")
        if key.entity == "param":
            return f"if(mapContains({r}.params, {k}), {r}.params[{k}], NULL)"
        return (
            f"if(mapContains({r}.tags, {k}) AND tupleElement({r}.tags[{k}], 'deleted') = 0, "
            f"tupleElement({r}.tags[{k}], 'value'), NULL)"
        )

    # -- order by --------------------------------------------------------------------
    def order(self, keys: tuple[OrderKey, ...]) -> CompiledOrder:
        """ORDER BY terms (runs without the key last) ending with the run id as tiebreaker;
        no keys: newest first."""
        terms: list[str] = []
        for ok in keys:
            direction = "DESC" if ok.descending else "ASC"
            if ok.key.entity == "attribute":
                expr = self._attribute_column(ok.key.name)
            else:
                expr = self.value(ok.key)
            terms.append(f"{expr} {direction} NULLS LAST")
        if not keys:
            terms.append(f"{self._attribute_column('start_time')} DESC")
        terms.append(f"{self._attribute_column('run_id')} ASC")
        return CompiledOrder(tuple(terms))
