"""The run search language: filters and order-by clauses, parsed and compiled to bound SQL.

Pure: no I/O. `parse_filter` / `parse_order_by` raise only `FilterSyntaxError`;
`RowCompiler` (run search) and `Compiler` (leaderboard, analytics) turn the trees into
ClickHouse SQL whose user values are all bound parameters.
"""

from query_api.search.ast import And, Comparison, Expr, Key, Or, OrderKey, render, render_order_by
from query_api.search.compile import (
    Binder,
    CompiledOrder,
    Compiler,
    RowCompiler,
    metric_key_split,
)
from query_api.search.parser import parse_filter, parse_order_by

__all__ = [
    "And",
    "Binder",
    "Comparison",
    "CompiledOrder",
    "Compiler",
    "Expr",
    "Key",
    "Or",
    "OrderKey",
    "RowCompiler",
    "metric_key_split",
    "parse_filter",
    "parse_order_by",
    "render",
    "render_order_by",
]
