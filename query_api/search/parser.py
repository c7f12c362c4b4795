"""Recursive-descent parser of run filters and order-by clauses.

Grammar (keywords case-insensitive)::

    filter     := [ or_expr ] END
    or_expr    := and_expr ( OR and_expr )*
    and_expr   := primary ( AND primary )*
    primary    := '(' or_expr ')' | comparison
    comparison := key ( op literal | IS [NOT] NULL | [NOT] IN '(' literal (',' literal)* ')' )
    key        := prefix '.' name | prefix '.' quoted-name | attribute-alias
    order_by   := [ order_term ( ',' order_term )* ] END
    order_term := key [ ASC | DESC ]

Type rules: metrics take numbers (= != < <= > >=); params and tags take strings
(= != LIKE ILIKE IN NOT IN); attributes take what their kind allows (times are integers in
epoch milliseconds). Every key may be tested with IS [NOT] NULL.

Rule: every failure is FilterSyntaxError with the position of the offending token; nesting
and clause counts are capped so no input can exhaust the stack or build unbounded SQL.
"""

from __future__ import annotations

import math

from query_api.errors import FilterSyntaxError
from query_api.search.ast import (
    LIST_OPS,
    NULL_OPS,
    NUMERIC_OPS,
    STRING_OPS,
    And,
    Comparison,
    Entity,
    Expr,
    Key,
    Or,
    OrderKey,
    Value,
)
from query_api.search.keys import ATTRIBUTES, AttrKind, resolve_bare, resolve_prefix
from query_api.search.tokens import Kind, Token, tokenize

MAX_DEPTH = 32
MAX_CLAUSES = 200
MAX_LIST = 1_000
MAX_ORDER_TERMS = 16
_INT64 = 2**63 - 1


def parse_filter(text: str | None) -> Expr | None:
    """Parse a filter; an empty or blank filter is None (every run)."""
    if text is None:
        return None
    return _Parser(tokenize(text)).filter()


def parse_order_by(text: str) -> tuple[OrderKey, ...]:
    """Parse a comma-separated order-by list (`metrics.acc DESC, attributes.start_time`)."""
    return _Parser(tokenize(text)).order_by()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.clauses = 0

    # -- helpers ---------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        t = self.tokens[self.i]
        if t.kind is not Kind.END:
            self.i += 1
        return t

    def keyword(self, *words: str) -> bool:
        """True (and consumes it) when the current token is one of the keywords."""
        t = self.tok
        if t.kind is Kind.WORD and t.text.upper() in words:
            self.i += 1
            return True
        return False

    def expect(self, kind: Kind, what: str) -> Token:
        t = self.tok
        if t.kind is not kind:
            raise FilterSyntaxError(f"expected {what}, found {t.describe()}", t.position)
        return self.advance()

    def expect_end(self) -> None:
        t = self.tok
        if t.kind is not Kind.END:
            raise FilterSyntaxError(f"unexpected {t.describe()}", t.position)

    # -- filter ----------------------------------------------------------------------
    def filter(self) -> Expr | None:
        if self.tok.kind is Kind.END:
            return None
        expr = self.or_expr()
        self.expect_end()
        return expr

    def or_expr(self) -> Expr:
        items = [self.and_expr()]
        while self.keyword("OR"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(_flatten(items, Or)))

    def and_expr(self) -> Expr:
        items = [self.primary()]
        while self.keyword("AND"):
            items.append(self.primary())
        return items[0] if len(items) == 1 else And(tuple(_flatten(items, And)))

    def primary(self) -> Expr:
        t = self.tok
        if t.kind is Kind.LPAREN:
            if self.depth >= MAX_DEPTH:
                raise FilterSyntaxError(f"parentheses nested deeper than {MAX_DEPTH}", t.position)
            self.advance()
            self.depth += 1
            expr = self.or_expr()
            self.depth -= 1
            self.expect(Kind.RPAREN, "')'")
            return expr
        return self.comparison()

    def comparison(self) -> Comparison:
        self.clauses += 1
        if self.clauses > MAX_CLAUSES:
            raise FilterSyntaxError(f"more than {MAX_CLAUSES} comparisons", self.tok.position)
        key = self.key()
        t = self.tok
        if self.keyword("IS"):
            op = "IS NOT NULL" if self.keyword("NOT") else "IS NULL"
            if not self.keyword("NULL"):
                raise FilterSyntaxError(f"expected NULL, found {self.tok.describe()}", t.position)
            return Comparison(key, op, None, key.position)
        if self.keyword("NOT"):
            if not self.keyword("IN"):
                raise FilterSyntaxError(
                    f"expected IN after NOT, found {self.tok.describe()}", self.tok.position
                )
            return self.in_list(key, "NOT IN", t)
        if self.keyword("IN"):
            return self.in_list(key, "IN", t)
        if self.keyword("LIKE", "ILIKE"):
            op = self.tokens[self.i - 1].text.upper()
        elif t.kind is Kind.OP:
            op = self.advance().text
        else:
            raise FilterSyntaxError(
                f"expected a comparison operator, found {t.describe()}", t.position
            )
        _check_op(key, op, t)
        at = self.tok.position
        value = self.literal(key)
        if op in ("LIKE", "ILIKE") and isinstance(value, str) and ends_in_escape(value):
            raise FilterSyntaxError(
                "a LIKE pattern cannot end with an escaping backslash (write \\\\ for one)",
                at,
            )
        return Comparison(key, op, value, key.position)

    def in_list(self, key: Key, op: str, op_token: Token) -> Comparison:
        _check_op(key, op, op_token)
        self.expect(Kind.LPAREN, "'(' after IN")
        values = [self.string_literal()]
        while self.tok.kind is Kind.COMMA:
            self.advance()
            if len(values) >= MAX_LIST:
                raise FilterSyntaxError(f"more than {MAX_LIST} values in IN", self.tok.position)
            values.append(self.string_literal())
        self.expect(Kind.RPAREN, "')' or ','")
        return Comparison(key, op, tuple(values), key.position)

    def string_literal(self) -> str:
        return self.expect(Kind.STRING, "a quoted string").text

    def literal(self, key: Key) -> Value:
        kind = _value_kind(key)
        t = self.advance()
        if kind == "string":
            if t.kind is not Kind.STRING:
                raise FilterSyntaxError(
                    f"expected a quoted string, found {t.describe()}", t.position
                )
            return t.text
        if t.kind is not Kind.NUMBER:
            raise FilterSyntaxError(f"expected a number, found {t.describe()}", t.position)
        if kind == "time":
            try:
                value = int(t.text)
            except ValueError:
                raise FilterSyntaxError(
                    "expected an integer (epoch milliseconds)", t.position
                ) from None
            if abs(value) > _INT64:
                raise FilterSyntaxError("integer out of range", t.position)
            return value
        number = float(t.text)
        if not math.isfinite(number):
            raise FilterSyntaxError("number out of range", t.position)
        return number

    # -- keys ------------------------------------------------------------------------
    def key(self) -> Key:
        t = self.advance()
        if t.kind is Kind.QUOTED_KEY:
            return _make_key(resolve_prefix(t.text, t.position), t.name, t.position)
        if t.kind is not Kind.WORD:
            raise FilterSyntaxError(
                f"expected a key such as metrics.acc, found {t.describe()}", t.position
            )
        prefix, dot, name = t.text.partition(".")
        if not dot:
            return Key("attribute", resolve_bare(prefix, t.position), t.position)
        return _make_key(resolve_prefix(prefix, t.position), name, t.position)

    # -- order by --------------------------------------------------------------------
    def order_by(self) -> tuple[OrderKey, ...]:
        if self.tok.kind is Kind.END:
            return ()
        terms = [self.order_term()]
        while self.tok.kind is Kind.COMMA:
            self.advance()
            if len(terms) >= MAX_ORDER_TERMS:
                raise FilterSyntaxError(
                    f"more than {MAX_ORDER_TERMS} order terms", self.tok.position
                )
            terms.append(self.order_term())
        self.expect_end()
        return tuple(terms)

    def order_term(self) -> OrderKey:
        key = self.key()
        if self.keyword("DESC"):
            return OrderKey(key, True)
        self.keyword("ASC")
        return OrderKey(key, False)


def _make_key(entity: Entity, name: str, position: int) -> Key:
    if not name:
        raise FilterSyntaxError("empty key name", position)
    if entity == "attribute":
        return Key("attribute", resolve_bare(name, position, prefixed=True), position)
    return Key(entity, name, position)


def _value_kind(key: Key) -> AttrKind:
    if key.entity == "metric":
        return "number"
    if key.entity == "attribute":
        return ATTRIBUTES[key.name]
    return "string"


def _check_op(key: Key, op: str, t: Token) -> None:
    kind = _value_kind(key)
    allowed = {
        "number": NUMERIC_OPS,
        "time": NUMERIC_OPS,
        "string": STRING_OPS + LIST_OPS,
    }[kind] + NULL_OPS
    if op not in allowed:
        raise FilterSyntaxError(
            f"operator {op} is not valid for {key.render()} (allowed: {', '.join(allowed)})",
            t.position,
        )


def _flatten(items: list[Expr], cls: type[And] | type[Or]) -> list[Expr]:
    """`a and (b and c)` is one And of three: keeps the tree canonical."""
    out: list[Expr] = []
    for item in items:
        if isinstance(item, cls):
            out.extend(item.items)
        else:
            out.append(item)
    return out


def ends_in_escape(pattern: str) -> bool:
    """Whether the pattern's last character is a backslash that escapes nothing (an odd run
    of them): ClickHouse refuses such a LIKE pattern."""
    return (len(pattern) - len(pattern.rstrip("\\"))) % 2 == 1
