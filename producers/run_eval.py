"""Run methods for evaluation: alerts on logged metrics, classification metrics, and the
metric-logging names users of other trackers expect (Verta, Vertex AI, T9k, MarkovML).

Rule: an alert rule fires on the transition into its condition (see `producers.alerts`) and
emits one AlertTriggered event; evaluations are validated completely (matrix shape, curve
lengths) before their event is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from producers import validation as v
from producers.alerts import AlertBook, Firing, make_rule
from producers.errors import InvalidArgument, InvalidType
from schemas import events as ev


def _floats(values: Any, argument: str) -> list[float]:
    if values is None:
        return []
    try:
        return [float(x) for x in values]
    except (TypeError, ValueError) as exc:
        raise InvalidType(argument, "must be a sequence of numbers") from exc


class EvalMixin:
    """Alerts, classification metrics and metric aliases of `Run`."""

    _alerts: AlertBook
    _alert_keys: set[str]

    def _event(self, cls: Any, *, experiment_level: bool = False, **fields: Any) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    def log_metric(
        self,
        key: str,
        value: float,
        step: int | None = None,
        epoch: int | None = None,
        timestamp: Any = None,
        split: str | None = None,
    ) -> None:
        raise NotImplementedError

    def log_metrics(
        self,
        metrics: Mapping[str, Any],
        step: int | None = None,
        epoch: int | None = None,
        timestamp: Any = None,
        split: str | None = None,
    ) -> None:
        raise NotImplementedError

    # ---- metric aliases users of other trackers expect ----------------------------------
    def log_observation(
        self, key: str, value: float, timestamp: Any = None, epoch_num: int | None = None
    ) -> None:
        """Verta-style observation: step auto-increments per key."""
        self.log_metric(key, value, epoch=epoch_num, timestamp=timestamp)

    def log_time_series_metrics(
        self, metrics: Mapping[str, Any], step: int | None = None, wall_time: Any = None
    ) -> None:
        """Vertex-style time series: `log_metrics` with `wall_time` as the timestamp."""
        self.log_metrics(metrics, step=step, timestamp=wall_time)

    def log(
        self,
        type: str,
        metrics: Mapping[str, Any],
        step: int | None = None,  # noqa: A002
        epoch: int | None = None,
    ) -> None:
        """T9k-style: metrics of one split ("train", "val", "test" or custom)."""
        self.log_metrics(metrics, step=step, epoch=epoch, split=type)

    def add_record(self, record: Mapping[str, Any]) -> None:
        """MarkovML-style record of metric values (steps auto-increment)."""
        self.log_metrics(record)

    # ---- alerts -------------------------------------------------------------------------
    def alert_on(
        self,
        key: str,
        op: str,
        threshold: float,
        text: str | None = None,
        *,
        split: str | None = None,
        level: str = "WARN",
    ) -> None:
        """Emit AlertTriggered when a logged `key` satisfies `value <op> threshold`.

        Fires on the transition into the condition and re-arms when it clears (one alert,
        not one per point). `op` is one of < <= > >= == !=.
        """
        if level not in ("INFO", "WARN", "ERROR"):
            raise InvalidArgument("level", f"{level!r} is not INFO, WARN or ERROR")
        rule = make_rule(key, op, threshold, text, split)
        rule.text = rule.text or rule.describe()
        setattr(rule, "level", level)  # noqa: B010 - carried to the event
        self._alerts.add(rule)
        self._alert_keys.add(key)

    def _fire(self, f: Firing) -> None:
        self._event(
            ev.AlertTriggered,
            rule_id=f"{f.rule.describe()}",
            key=f.rule.key,
            op=f.rule.op,
            threshold=f.rule.threshold,
            value=f.value,
            text=f.rule.text,
            level=ev.AlertLevel(getattr(f.rule, "level", "WARN")),
            step=f.step,
        )

    # ---- evaluation -----------------------------------------------------------------------
    def log_classification_metrics(
        self,
        labels: Sequence[str] | None = None,
        matrix: Sequence[Sequence[int]] | None = None,
        fpr: Sequence[float] | None = None,
        tpr: Sequence[float] | None = None,
        thresholds: Sequence[float] | None = None,
        *,
        key: str = "classification",
        split: str | None = None,
        step: int | None = None,
        precision: Sequence[float] | None = None,
        recall: Sequence[float] | None = None,
        pr_thresholds: Sequence[float] | None = None,
    ) -> None:
        """Confusion matrix and ROC/PR curves (Vertex AI's `log_classification_metrics`)."""
        self._check_open()
        v.check_key(key, "key")
        if split is not None:
            v.check_key(split, "split")
        names = [str(x) for x in (labels or [])]
        rows = [list(r) for r in (matrix or [])]
        if rows and (len(rows) != len(names) or any(len(r) != len(names) for r in rows)):
            raise InvalidArgument("matrix", f"must be {len(names)} x {len(names)} (labels)")
        for r in rows:
            for x in r:
                if isinstance(x, bool) or not isinstance(x, int) or x < 0:
                    raise InvalidType("matrix", f"cells must be counts (int >= 0), got {x!r}")
        f, t, th = _floats(fpr, "fpr"), _floats(tpr, "tpr"), _floats(thresholds, "thresholds")
        if not len(f) == len(t) == (len(th) or len(f)):
            raise InvalidArgument("fpr", "fpr, tpr and thresholds must have equal lengths")
        p, r_, pt = (
            _floats(precision, "precision"),
            _floats(recall, "recall"),
            _floats(pr_thresholds, "pr_thresholds"),
        )
        if len(p) != len(r_):
            raise InvalidArgument("precision", "precision and recall must have equal lengths")
        if any(math.isnan(x) for x in f + t):
            raise InvalidArgument("fpr", "ROC rates must not be NaN")
        self._event(
            ev.ClassificationMetricsLogged,
            key=key,
            split=split or "",
            step=None if step is None else v.check_int64(step, "step"),
            labels=names,
            confusion_matrix=rows,
            fpr=f,
            tpr=t,
            thresholds=th,
            precision=p,
            recall=r_,
            pr_thresholds=pt,
        )
