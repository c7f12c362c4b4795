"""Figures and rows of the side-by-side table (no measuring here, only bookkeeping)."""

from __future__ import annotations

import statistics
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


def first_line(exc: BaseException) -> str:
    """The error's first line, as the table shows it (type + message)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


@dataclass
class Figure:
    """One side's result for one row: repeats (median shown, spread min-max) or an error."""

    values: list[float] = field(default_factory=list)
    unit: str = ""
    note: str = ""
    error: str | None = None
    estimated: bool = False  # extrapolated from a smaller size (marked "~" in the table)
    unavailable: bool = False  # the feature does not exist (not a failure)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.unavailable and bool(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cell(self) -> str:
        if self.unavailable:
            return f"not available ({self.note})" if self.note else "not available"
        if self.error is not None:
            return f"FAILED: {self.error}"
        if not self.values:
            return "-"
        text = ("~" if self.estimated else "") + fmt(self.median, self.unit)
        if len(self.values) > 1:
            lo, hi = min(self.values), max(self.values)
            text += f" [{fmt(lo, '')}–{fmt(hi, '')}, n={len(self.values)}]"
        return text


def fmt(v: float, unit: str) -> str:
    if v != v:  # NaN
        return "nan"
    a = abs(v)
    if a >= 100:
        s = f"{v:,.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    elif a >= 1:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3g}"
    return f"{s} {unit}".strip()


@dataclass
class Row:
    scenario: str  # "1", "2", ... "8"
    label: str
    size: str
    runstream: Figure
    mlflow: Figure
    better: str = "higher"  # or "lower"
    goal: str = ""
    goal_value: float | None = None  # in the Runstream figure's unit

    def ratio(self) -> float | None:
        """How many times better Runstream is (>1: Runstream ahead)."""
        if not (self.runstream.ok and self.mlflow.ok):
            return None
        r, m = self.runstream.median, self.mlflow.median
        if r <= 0 or m <= 0:
            return None
        return r / m if self.better == "higher" else m / r

    def goal_met(self) -> bool | None:
        if self.goal_value is None or not self.runstream.ok:
            return None
        if self.better == "higher":
            return self.runstream.median >= self.goal_value
        return self.runstream.median <= self.goal_value

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio_runstream_advantage"] = self.ratio()
        d["goal_met"] = self.goal_met()
        return d


def guarded(fig_unit: str, fn: Callable[[], Figure], log: Callable[[str], None]) -> Figure:
    """Run one side of a row; an exception becomes a FAILED cell (the suite goes on)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table, never hidden
        log("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-2000:])
        return Figure(unit=fig_unit, error=first_line(exc))
