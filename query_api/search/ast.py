"""The syntax tree of run filters and order-by clauses, and its canonical text form.

Rule: `render(parse(text))` is canonical text that parses back to an equal tree; positions
are carried for error messages only and never take part in equality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Union

Entity = Literal["metric", "param", "tag", "attribute"]

# Canonical prefix of each entity in rendered text.
PREFIX: dict[Entity, str] = {
    "metric": "metrics",
    "param": "params",
    "tag": "tags",
    "attribute": "attributes",
}

# Operators by the kind of value they take.
NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
STRING_OPS = ("=", "!=", "LIKE", "ILIKE")
LIST_OPS = ("IN", "NOT IN")
NULL_OPS = ("IS NULL", "IS NOT NULL")

Value = Union[float, int, str, tuple[str, ...], None]

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./:@\-]*\Z")


@dataclass(frozen=True)
class Key:
    """One addressable field of a run: `metrics.acc`, `params.lr`, `attributes.status`."""

    entity: Entity
    name: str
    position: int = field(default=0, compare=False)

    def render(self) -> str:
        """Canonical text: `prefix.name`, backquoting names that are not plain identifiers."""
        if _PLAIN_NAME.match(self.name) and not self.name.endswith("."):
            return f"{PREFIX[self.entity]}.{self.name}"
        return f"{PREFIX[self.entity]}.`{self.name.replace('`', '``')}`"


@dataclass(frozen=True)
class Comparison:
    """`key op value`; `value` is None for IS [NOT] NULL and a tuple for [NOT] IN."""

    key: Key
    op: str
    value: Value
    position: int = field(default=0, compare=False)

    def render(self) -> str:
        if self.op in NULL_OPS:
            return f"{self.key.render()} {self.op}"
        return f"{self.key.render()} {self.op} {render_value(self.value)}"


@dataclass(frozen=True)
class And:
    """All of `items` (at least two)."""

    items: tuple[Expr, ...]

    def render(self) -> str:
        return " and ".join(_group(i) for i in self.items)


@dataclass(frozen=True)
class Or:
    """Any of `items` (at least two)."""

    items: tuple[Expr, ...]

    def render(self) -> str:
        return " or ".join(_group(i) for i in self.items)


Expr = Union[Comparison, And, Or]


@dataclass(frozen=True)
class OrderKey:
    """One order-by term; nulls (runs without the key) always sort last."""

    key: Key
    descending: bool = False

    def render(self) -> str:
        return f"{self.key.render()} {'DESC' if self.descending else 'ASC'}"


def _group(expr: Expr) -> str:
    return f"({expr.render()})" if isinstance(expr, (And, Or)) else expr.render()


def render_value(value: Value) -> str:
    """A literal as the parser reads it back: strings single-quoted with '' for a quote."""
    if isinstance(value, tuple):
        return "(" + ", ".join(render_value(v) for v in value) + ")"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool) or value is None:
        raise TypeError(f"not a filter literal: {value!r}")
    return repr(value)


def render(expr: Expr | None) -> str:
    """Canonical filter text ('' for no filter)."""
    return "" if expr is None else expr.render()


def render_order_by(keys: tuple[OrderKey, ...]) -> str:
    """Canonical order-by text, terms separated by ', '."""
    return ", ".join(k.render() for k in keys)
