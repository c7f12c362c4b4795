"""Alert rules evaluated as metrics are logged: `run.alert_on("loss", "<", 0.25, text=...)`.

Rule: a rule fires on the transition from "condition false" to "condition true" and re-arms
when a later point makes the condition false again, so a loss that stays below 0.25 for a
million steps raises one alert, not a million. NaN never satisfies a comparison (IEEE), and
`!=` with NaN is treated the same way. Evaluation is O(1) per point and only runs for keys
that have a rule.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Callable

from producers.errors import InvalidArgument, InvalidType
from producers.validation import check_key, check_text

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass
class AlertRule:
    """One condition on one metric key (optionally one split)."""

    key: str
    op: str
    threshold: float
    text: str
    split: str | None = None
    armed: bool = True
    _fn: Callable[[float, float], bool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._fn = OPERATORS[self.op]

    def check(self, value: float) -> bool:
        """True when this point makes the rule fire (and disarms it until it clears)."""
        hit = not math.isnan(value) and self._fn(value, self.threshold)
        if hit and self.armed:
            self.armed = False
            return True
        if not hit:
            self.armed = True
        return False

    def describe(self) -> str:
        where = f"{self.key}[{self.split}]" if self.split else self.key
        return f"{where} {self.op} {self.threshold!r}"


@dataclass(frozen=True)
class Firing:
    """A rule that fired on one point."""

    rule: AlertRule
    value: float
    step: int


def make_rule(
    key: str, op: str, threshold: object, text: str | None, split: str | None
) -> AlertRule:
    """Validate the arguments of `alert_on` and build the rule."""
    check_key(key, "key")
    if op not in OPERATORS:
        raise InvalidArgument("op", f"{op!r} is not one of {sorted(OPERATORS)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidType("threshold", f"must be a number, got {type(threshold).__name__}")
    if split is not None:
        check_key(split, "split")
    rule = AlertRule(key=key, op=op, threshold=float(threshold), text="", split=split)
    rule.text = check_text(text, "text", 8000) if text is not None else rule.describe()
    return rule


class AlertBook:
    """The rules of one run, indexed by (key, split) for the logging hot path."""

    def __init__(self) -> None:
        self._rules: dict[tuple[str, str | None], list[AlertRule]] = {}

    def __bool__(self) -> bool:
        return bool(self._rules)

    def add(self, rule: AlertRule) -> None:
        self._rules.setdefault((rule.key, rule.split), []).append(rule)

    def watches(self, key: str, split: str | None) -> bool:
        return (key, split) in self._rules or (key, None) in self._rules

    def evaluate(self, key: str, split: str | None, value: float, step: int) -> list[Firing]:
        """Firings caused by one point (rules without a split match every split)."""
        fired: list[Firing] = []
        for rules_key in {(key, split), (key, None)}:
            for rule in self._rules.get(rules_key, ()):
                if rule.check(value):
                    fired.append(Firing(rule, value, step))
        return fired
