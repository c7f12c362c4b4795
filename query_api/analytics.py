"""The safe query model of the analytics routes: JSON bodies validated by pydantic.

Rule: nothing a user sends becomes SQL text. Group-by keys are parsed into (kind, name)
against a strict grammar (`params.<name>`, `tags.<name>`, or a run attribute); names,
metric keys, splits, steps and the filter's values reach ClickHouse as bound parameters;
aggregates and `at` are closed enums mapped to fixed SQL in `repository/analytics.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from query_api.errors import BadRequest

Aggregate = Literal["mean", "p50", "p90", "p95", "p99", "min", "max", "count", "std", "sum"]
SummaryAgg = Literal["last", "min", "max"]
I64 = 2**63 - 1

#: run attributes that can be grouped by / shown, and their `runs` column
ATTRIBUTE_COLUMNS = {"status": "status", "experiment_id": "experiment_id", "run_name": "name"}
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_\-./: ]{0,249}"
_GROUP_KEY = re.compile(rf"(params|param|tags|tag)\.({_NAME})\Z")
_PARAM_NAME = re.compile(rf"{_NAME}\Z")


def _default_aggregates() -> list[Aggregate]:
    return ["mean", "count"]


class AtStep(BaseModel):
    """The value at one step (the mean of the points there, e.g. of several ranks)."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=-I64, le=I64)


class AtEpoch(BaseModel):
    """The value at the last step of one epoch (mean of the points at that step)."""

    model_config = ConfigDict(extra="forbid")
    epoch: int = Field(ge=-I64, le=I64)


class AggregateRequest(BaseModel):
    """POST /api/v1/analytics/aggregate: one value per run, aggregated per group of runs."""

    model_config = ConfigDict(extra="forbid")

    experiment_ids: list[str] = Field(default_factory=list, max_length=1_000)
    filter: str = Field(default="", max_length=20_000)
    metric: str = Field(min_length=1, max_length=250)
    split: str = Field(default="", max_length=250)
    at: Union[SummaryAgg, AtStep, AtEpoch] = "last"
    group_by: list[str] = Field(default_factory=list, max_length=8)
    aggregates: list[Aggregate] = Field(
        default_factory=_default_aggregates, min_length=1, max_length=16
    )


class MetricColumn(BaseModel):
    """One metric axis of a parallel-coordinates view."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=250)
    split: str = Field(default="", max_length=250)
    agg: SummaryAgg = "last"

    @property
    def column(self) -> str:
        split = f"@{self.split}" if self.split else ""
        return f"metrics.{self.key}{split}.{self.agg}"


class ParallelCoordinatesRequest(BaseModel):
    """POST /api/v1/analytics/parallel-coordinates: one row per run."""

    model_config = ConfigDict(extra="forbid")

    experiment_ids: list[str] = Field(default_factory=list, max_length=1_000)
    filter: str = Field(default="", max_length=20_000)
    params: list[str] = Field(default_factory=list, max_length=32)
    metrics: list[MetricColumn] = Field(default_factory=list, max_length=16)
    max_runs: int = Field(default=10_000, ge=1, le=100_000)


@dataclass(frozen=True)
class GroupKey:
    """A parsed group-by key: `text` as the user wrote it, `kind` and the bare `name`."""

    text: str
    kind: Literal["param", "tag", "attribute"]
    name: str


def parse_group_key(text: str) -> GroupKey:
    """`params.lr`, `tags.model`, `status`, `attributes.run_name` … else BadRequest."""
    m = _GROUP_KEY.match(text)
    if m is not None:
        kind: Literal["param", "tag"] = "param" if m.group(1).startswith("param") else "tag"
        return GroupKey(text, kind, m.group(2))
    bare = text.removeprefix("attributes.").removeprefix("attribute.")
    if bare in ATTRIBUTE_COLUMNS:
        return GroupKey(text, "attribute", bare)
    known = ", ".join(sorted(ATTRIBUTE_COLUMNS))
    raise BadRequest(
        f"group_by: {text[:80]!r} is not params.<name>, tags.<name> or one of {known} "
        "(names: letters, digits and _ - . / : space)"
    )


def parse_group_keys(texts: list[str]) -> list[GroupKey]:
    keys = [parse_group_key(t) for t in texts]
    if len({k.text for k in keys}) != len(keys):
        raise BadRequest("group_by: duplicate key")
    return keys


def check_param_names(names: list[str]) -> list[str]:
    for name in names:
        if not _PARAM_NAME.match(name):
            raise BadRequest(f"params: invalid param name {name[:80]!r}")
    if len(set(names)) != len(names):
        raise BadRequest("params: duplicate name")
    return names
