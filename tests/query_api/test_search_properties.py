"""Properties of the search language: round trip, total error handling, no injection."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from query_api.errors import FilterSyntaxError
from query_api.search import (
    And,
    Binder,
    Comparison,
    Compiler,
    Expr,
    Key,
    Or,
    OrderKey,
    RowCompiler,
    parse_filter,
    parse_order_by,
    render,
    render_order_by,
)
from query_api.search.ast import Entity
from query_api.search.keys import ATTRIBUTES
from query_api.search.parser import ends_in_escape
from schemas.metrics import parse_series_key

NASTY = "'\"`;\\-/*()%_ \n\tx@.,=<>é"
names = st.text(alphabet=st.sampled_from(NASTY) | st.characters(), min_size=1, max_size=12)
strings = st.text(alphabet=st.sampled_from(NASTY) | st.characters(), max_size=12)
numbers = st.floats(allow_nan=False, allow_infinity=False)
times = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
numeric_ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
null_ops = st.sampled_from(["IS NULL", "IS NOT NULL"])


@st.composite
def comparisons(draw: st.DrawFn) -> Comparison:
    entity: Entity = draw(st.sampled_from(["metric", "param", "tag", "attribute"]))
    if entity == "attribute":
        key = Key("attribute", draw(st.sampled_from(sorted(ATTRIBUTES))))
        kind = ATTRIBUTES[key.name]
    else:
        key = Key(entity, draw(names))
        kind = "number" if entity == "metric" else "string"
    if draw(st.booleans()) and draw(st.booleans()):
        return Comparison(key, draw(null_ops), None)
    if kind == "number":
        return Comparison(key, draw(numeric_ops), draw(numbers))
    if kind == "time":
        return Comparison(key, draw(numeric_ops), draw(times))
    op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"]))
    if op in ("IN", "NOT IN"):
        return Comparison(key, op, tuple(draw(st.lists(strings, min_size=1, max_size=4))))
    if op in ("LIKE", "ILIKE"):  # a pattern ClickHouse takes (the parser refuses the others)
        return Comparison(key, op, draw(strings.filter(lambda v: not ends_in_escape(v))))
    return Comparison(key, op, draw(strings))


def _exprs(depth: int, parent: type | None) -> st.SearchStrategy[Expr]:
    """Canonical trees: And never directly inside And, Or never directly inside Or."""
    if depth == 0:
        return comparisons()
    options: list[st.SearchStrategy[Expr]] = [comparisons()]
    if parent is not And:
        items = st.lists(_exprs(depth - 1, And), min_size=2, max_size=3)
        options.append(items.map(lambda xs: And(tuple(xs))))
    if parent is not Or:
        items = st.lists(_exprs(depth - 1, Or), min_size=2, max_size=3)
        options.append(items.map(lambda xs: Or(tuple(xs))))
    return st.one_of(*options)


exprs = _exprs(3, None)
order_keys = st.builds(
    OrderKey,
    st.one_of(
        st.builds(Key, st.sampled_from(["metric", "param", "tag"]), names),
        st.builds(Key, st.just("attribute"), st.sampled_from(sorted(ATTRIBUTES))),
    ),
    st.booleans(),
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(exprs)
def test_render_then_parse_is_identity(expr: Expr) -> None:
    text = render(expr)
    assert parse_filter(text) == expr
    assert render(parse_filter(text)) == text


@FAST
@given(st.lists(order_keys, max_size=5))
def test_order_by_round_trips(keys: list[OrderKey]) -> None:
    assert parse_order_by(render_order_by(tuple(keys))) == tuple(keys)


VOCAB = [
    "metrics.a",
    "params.p",
    "tags.t",
    "status",
    "start_time",
    "metrics.`x y`",
    "and",
    "or",
    "not",
    "in",
    "is",
    "null",
    "like",
    "ilike",
    "(",
    ")",
    ",",
    "=",
    "!=",
    "<",
    ">=",
    "'s'",
    "'",
    '"',
    "`",
    "1",
    "-2.5e3",
    "1e",
    "--",
    ";",
    "\\",
    "/*",
    "desc",
    "asc",
    "@",
    ".",
]


@FAST
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(VOCAB), max_size=14).map(" ".join)))
def test_garbage_only_ever_raises_filter_syntax_error(text: str) -> None:
    for parse in (parse_filter, parse_order_by):
        position = 0
        try:
            parse(text)
        except FilterSyntaxError as exc:
            position = exc.position
        assert 0 <= position <= len(text)


_PLACEHOLDER = re.compile(r"\{p\d+:(String|Float64|Int64|Array\(String\))\}")
_PLACEHOLDER_NAME = re.compile(r"\{(p\d+):")
# The only quoted literals the compilers write themselves.
_FIXED_LITERALS = re.compile(r"'(value|UTC|deleted|name|status|start_time|end_time)'")


def _series_name(text: str) -> str | None:
    try:
        return parse_series_key(text)[0]
    except ValueError:
        return None


def _user_values(expr: Expr) -> list[Any]:
    if isinstance(expr, Comparison):
        return [expr.key.name, expr.value]
    return [v for item in expr.items for v in _user_values(item)]


@FAST
@given(exprs, st.lists(order_keys, max_size=3), st.booleans())
def test_user_values_only_ever_appear_as_bound_parameters(
    expr: Expr, keys: list[OrderKey], rows: bool
) -> None:
    binder = Binder()
    sql = (RowCompiler if rows else Compiler)("db", binder).where(parse_filter(render(expr)))
    full = sql
    if rows:
        order = RowCompiler("db", binder).order(tuple(keys))
        full = " ".join([sql, *order.terms])
    skeleton = _FIXED_LITERALS.sub("", _PLACEHOLDER.sub("?", full))
    for forbidden in ("'", '"', "`", ";", "--", "/*", "\\", "\n"):
        assert forbidden not in skeleton
    # every parameter is used; the row compiler uses a key's twice (test, then read)
    assert set(_PLACEHOLDER_NAME.findall(full)) == set(binder.params)
    bound = list(binder.params.values())
    if rows:  # a metric's name is bound as its series key
        bound += [_series_name(v) for v in bound if isinstance(v, str)]
    for value in _user_values(expr):
        if isinstance(value, tuple):
            assert list(value) in bound
        elif isinstance(value, str) and "@" not in value and value:
            assert value in bound or value in ATTRIBUTES


@FAST
@given(st.text(alphabet=st.sampled_from(NASTY), max_size=30))
@example("x\\")  # an escaping backslash ends it: refused
@example("x\\\\")  # a literal one: bound
def test_injection_strings_in_values_are_bound_verbatim(payload: str) -> None:
    quoted = "'" + payload.replace("'", "''") + "'"
    text = f"params.p = {quoted} or tags.t LIKE {quoted}"
    if ends_in_escape(payload):  # not a LIKE pattern ClickHouse takes: refused, positioned
        with pytest.raises(FilterSyntaxError, match="backslash"):
            parse_filter(text)
        return
    binder = Binder()
    sql = Compiler("db", binder).where(parse_filter(text))
    assert list(binder.params.values()) == ["p", payload, "t", payload]
    skeleton = _PLACEHOLDER.sub("?", sql)
    assert "'" not in skeleton
    assert ";" not in skeleton
