"""Examples of the run search language: what parses to what, and where errors point."""

from __future__ import annotations

import pytest

from query_api.errors import BadRequest, FilterSyntaxError
from query_api.search import (
    And,
    Comparison,
    Key,
    Or,
    OrderKey,
    parse_filter,
    parse_order_by,
    render,
    render_order_by,
)


def test_the_issue_example_parses_to_one_and_of_four() -> None:
    expr = parse_filter(
        "metrics.acc > 0.9 and params.lr = '0.01' and tags.team = 'x' "
        "and attributes.status = 'FINISHED'"
    )
    assert expr == And(
        (
            Comparison(Key("metric", "acc"), ">", 0.9),
            Comparison(Key("param", "lr"), "=", "0.01"),
            Comparison(Key("tag", "team"), "=", "x"),
            Comparison(Key("attribute", "status"), "=", "FINISHED"),
        )
    )


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_blank_filter_is_none(text: str) -> None:
    assert parse_filter(text) is None
    assert parse_filter(None) is None


def test_or_binds_looser_than_and_and_parentheses_override() -> None:
    a = Comparison(Key("metric", "a"), "<", 1.0)
    b = Comparison(Key("metric", "b"), "<", 2.0)
    c = Comparison(Key("metric", "c"), "<", 3.0)
    assert parse_filter("metrics.a < 1 or metrics.b < 2 and metrics.c < 3") == Or((a, And((b, c))))
    assert parse_filter("(metrics.a < 1 OR metrics.b < 2) AND metrics.c < 3") == And(
        (Or((a, b)), c)
    )
    assert parse_filter("((metrics.a < 1))") == a


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("metric.acc = 1", Key("metric", "acc")),
        ("param.lr = '1'", Key("param", "lr")),
        ("parameters.lr = '1'", Key("param", "lr")),
        ("tag.t = '1'", Key("tag", "t")),
        ("attribute.status = 'X'", Key("attribute", "status")),
        ("attr.run_name = 'X'", Key("attribute", "run_name")),
        ("run_name = 'X'", Key("attribute", "run_name")),
        ("status = 'X'", Key("attribute", "status")),
        ("run_id = 'X'", Key("attribute", "run_id")),
        ("attributes.run_uuid = 'X'", Key("attribute", "run_id")),
        ("start_time > 5", Key("attribute", "start_time")),
        ("created > 5", Key("attribute", "start_time")),
        ("end_time > 5", Key("attribute", "end_time")),
        ("METRICS.acc = 1", Key("metric", "acc")),
        ("metrics.`val loss` = 1", Key("metric", "val loss")),
        ('metrics."val loss" = 1', Key("metric", "val loss")),
        ("metrics.`a``b` = 1", Key("metric", "a`b")),
        ("metrics.train/loss = 1", Key("metric", "train/loss")),
        ("metrics.val.acc = 1", Key("metric", "val.acc")),
        ("metrics.loss@val = 1", Key("metric", "loss@val")),
        ("params.in = 'x'", Key("param", "in")),
    ],
)
def test_aliases_resolve_to_canonical_keys(text: str, key: Key) -> None:
    expr = parse_filter(text)
    assert isinstance(expr, Comparison)
    assert expr.key == key


@pytest.mark.parametrize(
    ("text", "op", "value"),
    [
        ("tags.t IN ('a', 'b')", "IN", ("a", "b")),
        ("tags.t not in ('a')", "NOT IN", ("a",)),
        ("params.p LIKE 'a%'", "LIKE", "a%"),
        ("params.p ilike 'A%'", "ILIKE", "A%"),
        ("params.p != 'x'", "!=", "x"),
        ("params.p <> 'x'", "!=", "x"),
        ("params.p IS NULL", "IS NULL", None),
        ("params.p is not null", "IS NOT NULL", None),
        ("metrics.m >= -1.5e3", ">=", -1500.0),
        ("metrics.m <= .5", "<=", 0.5),
        ("metrics.m IS NULL", "IS NULL", None),
        ("attributes.start_time < 1700000000000", "<", 1700000000000),
        ("attributes.end_time IS NULL", "IS NULL", None),
        ("params.p = 'it''s'", "=", "it's"),
        ('params.p = "say ""hi"""', "=", 'say "hi"'),
        ("params.p = 'back\\slash'", "=", "back\\slash"),
    ],
)
def test_operators_and_literals(text: str, op: str, value: object) -> None:
    expr = parse_filter(text)
    assert isinstance(expr, Comparison)
    assert (expr.op, expr.value) == (op, value)
    assert parse_filter(render(expr)) == expr


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("metrics.acc >", 13, "expected a number"),
        ("metrics.acc > 'x'", 14, "expected a number"),
        ("params.lr = 0.01", 12, "expected a quoted string"),
        ("params.lr > '1'", 10, "operator > is not valid"),
        ("metrics.acc LIKE 'x'", 12, "operator LIKE is not valid"),
        ("metrics.acc IN ('x')", 12, "operator IN is not valid"),
        ("foo = 'x'", 0, "unknown key 'foo'"),
        ("attributes.colour = 'x'", 0, "unknown attribute"),
        ("datasets.name = 'x'", 0, "unknown key prefix"),
        ("metrics.a > 1 and", 17, "expected a key"),
        ("metrics.a > 1 metrics.b > 2", 14, "unexpected"),
        ("(metrics.a > 1", 14, "expected ')'"),
        ("metrics.a > 1)", 13, "unexpected"),
        ("params.p = 'open", 11, "unterminated"),
        ("metrics.`open = 1", 8, "unterminated"),
        ("metrics.a > 1; DROP TABLE runs", 13, "unexpected character ';'"),
        ("metrics.a > 1 -- comment", 14, "unexpected character '-'"),
        ("metrics.a > 1e", 13, "exponent"),
        ("metrics.a > 1e999", 12, "out of range"),
        ("start_time > 1.5", 13, "integer"),
        ("params.p IS 'x'", 9, "expected NULL"),
        ("params.p NOT LIKE 'x'", 13, "expected IN after NOT"),
        ("tags.t IN 'a'", 10, "'(' after IN"),
        ("tags.t IN ()", 11, "quoted string"),
        ("metrics. = 1", 0, "empty key name"),
    ],
)
def test_errors_carry_the_position(text: str, position: int, fragment: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    assert info.value.position == position
    assert fragment in info.value.reason
    assert isinstance(info.value, BadRequest)
    assert f"position {position}" in info.value.message


def test_depth_and_size_limits_are_syntax_errors() -> None:
    with pytest.raises(FilterSyntaxError, match="nested deeper"):
        parse_filter("(" * 1_000 + "metrics.a > 1" + ")" * 1_000)
    with pytest.raises(FilterSyntaxError, match="more than 200"):
        parse_filter(" and ".join(["metrics.a > 1"] * 201))
    with pytest.raises(FilterSyntaxError, match="longer than"):
        parse_filter("metrics.a > 1 " * 5_000)


def test_order_by_list() -> None:
    keys = parse_order_by("metrics.acc DESC, params.lr ASC, attributes.start_time")
    assert keys == (
        OrderKey(Key("metric", "acc"), True),
        OrderKey(Key("param", "lr"), False),
        OrderKey(Key("attribute", "start_time"), False),
    )
    assert render_order_by(keys) == "metrics.acc DESC, params.lr ASC, attributes.start_time ASC"
    assert parse_order_by("") == ()
    assert parse_order_by("run_name desc") == (OrderKey(Key("attribute", "run_name"), True),)


@pytest.mark.parametrize(
    ("text", "position"),
    [("metrics.acc DESC DESC", 17), ("metrics.acc,", 12), ("acc", 0), ("metrics.a = 1", 10)],
)
def test_order_by_errors(text: str, position: int) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_order_by(text)
    assert info.value.position == position


def test_public_api_is_pinned() -> None:
    import query_api.search as search

    assert sorted(search.__all__) == [
        "And", "Binder", "Comparison", "CompiledOrder", "Compiler", "Expr", "Key", "Or",
        "OrderKey", "RowCompiler", "metric_key_split", "parse_filter", "parse_order_by", "render",
        "render_order_by",
    ]  # fmt: skip
