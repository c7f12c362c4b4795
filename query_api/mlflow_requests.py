"""MLflow's write requests (pydantic) and their validation (MLflow's limits and error codes).

Rules: unknown fields are ignored (newer clients send more); every limit violation is a
`BadRequest` (400 INVALID_PARAMETER_VALUE) naming the field, raised before anything is
produced. Limits: log-batch <= 1000 metrics, 100 params, 100 tags, 1000 in total; keys
1-250 characters of letters, digits, `_ - . / :` and space; param values <= 6000, tag values
<= 8000 characters.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from query_api.errors import BadRequest

MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
#: metrics, params and tags of one log-batch together (MLflow's own bound)
MAX_ENTITIES = 1000
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
_KEY = re.compile(r"[\w./\- :]{1,250}\Z", re.ASCII)
_SPECIAL = {"nan": math.nan, "infinity": math.inf, "-infinity": -math.inf, "inf": math.inf}


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")


class KeyValue(_Req):
    key: str = Field(max_length=1_000)
    value: Optional[str] = Field(default="", max_length=100_000)


class MetricIn(_Req):
    key: str = Field(max_length=1_000)
    value: Union[float, str]
    timestamp: Optional[int] = None
    step: Optional[int] = 0


class CreateExperiment(_Req):
    name: str = Field(default="", max_length=1_000)
    artifact_location: Optional[str] = Field(default=None, max_length=4_096)
    tags: list[KeyValue] = Field(default_factory=list, max_length=MAX_TAGS)


class ExperimentRef(_Req):
    experiment_id: str = Field(default="", max_length=256)


class UpdateExperiment(ExperimentRef):
    new_name: Optional[str] = Field(default=None, max_length=1_000)


class ExperimentTag(ExperimentRef):
    key: str = Field(max_length=1_000)
    value: Optional[str] = Field(default="", max_length=100_000)


class SearchExperiments(_Req):
    max_results: int = 1000
    page_token: Optional[str] = Field(default=None, max_length=4_096)
    filter: str = Field(default="", max_length=20_000)
    view_type: str = "ACTIVE_ONLY"
    order_by: list[str] = Field(default_factory=list, max_length=16)


class RunRef(_Req):
    run_id: Optional[str] = Field(default=None, max_length=256)
    run_uuid: Optional[str] = Field(default=None, max_length=256)

    @property
    def id(self) -> str:
        value = self.run_id or self.run_uuid
        if not value:
            raise BadRequest("Missing value for required parameter 'run_id'")
        return value


class CreateRun(_Req):
    experiment_id: Optional[str] = Field(default=None, max_length=256)
    user_id: Optional[str] = Field(default=None, max_length=1_000)
    run_name: Optional[str] = Field(default=None, max_length=1_000)
    start_time: Optional[int] = None
    tags: list[KeyValue] = Field(default_factory=list, max_length=MAX_TAGS * 10)


class UpdateRun(RunRef):
    status: Optional[str] = None
    end_time: Optional[int] = None
    run_name: Optional[str] = Field(default=None, max_length=1_000)


class LogMetric(RunRef, MetricIn):
    pass


class LogParam(RunRef):
    key: str = Field(max_length=1_000)
    value: Optional[str] = Field(default="", max_length=100_000)


class SetTag(RunRef):
    key: str = Field(max_length=1_000)
    value: Optional[str] = Field(default="", max_length=100_000)


class DeleteTag(RunRef):
    key: str = Field(max_length=1_000)


class LogBatch(RunRef):
    metrics: list[MetricIn] = Field(default_factory=list)
    params: list[KeyValue] = Field(default_factory=list)
    tags: list[KeyValue] = Field(default_factory=list)


class Dataset(_Req):
    name: str = Field(default="", max_length=1_000)
    digest: Optional[str] = Field(default=None, max_length=1_000)
    source_type: Optional[str] = Field(default=None, max_length=1_000)
    source: Optional[str] = Field(default=None, max_length=65_536)
    schema_: Optional[str] = Field(default=None, alias="schema", max_length=1_000_000)
    profile: Optional[str] = Field(default=None, max_length=1_000_000)


class DatasetInput(_Req):
    tags: list[KeyValue] = Field(default_factory=list, max_length=100)
    dataset: Dataset


class LogInputs(RunRef):
    datasets: list[DatasetInput] = Field(default_factory=list, max_length=1_000)


def check_key(key: str, what: str) -> str:
    if not _KEY.match(key):
        raise BadRequest(
            f"Invalid value {key!r} for parameter '{what}' supplied: names may only contain "
            "alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and "
            "slashes (/), 1 to 250 characters"
        )
    return key


def check_value(value: Optional[str], limit: int, what: str) -> str:
    text = value or ""
    if len(text) > limit:
        raise BadRequest(f"'{what}' exceeds the maximum length of {limit} characters")
    return text


def metric_value(value: Union[float, str], key: str) -> float:
    if isinstance(value, str):
        special = _SPECIAL.get(value.strip().lower())
        if special is None:
            try:
                return float(value)
            except ValueError as exc:
                raise BadRequest(f"Got invalid value {value!r} for metric {key!r}") from exc
        return special
    return float(value)


def check_batch(req: LogBatch) -> None:
    if len(req.metrics) > MAX_METRICS:
        raise BadRequest(f"A batch logging request can contain at most {MAX_METRICS} metrics")
    if len(req.params) > MAX_PARAMS:
        raise BadRequest(f"A batch logging request can contain at most {MAX_PARAMS} params")
    if len(req.tags) > MAX_TAGS:
        raise BadRequest(f"A batch logging request can contain at most {MAX_TAGS} tags")
    total = len(req.metrics) + len(req.params) + len(req.tags)
    if total > MAX_ENTITIES:
        raise BadRequest(
            f"A batch logging request can contain at most {MAX_ENTITIES} metrics, params, and"
            f" tags in total. Received a batch of {total} entities"
        )
    seen: dict[str, str] = {}
    for p in req.params:
        check_key(p.key, "key")
        value = check_value(p.value, MAX_PARAM_VALUE, "value")
        if seen.setdefault(p.key, value) != value:
            raise BadRequest(f"Duplicate parameter keys have been submitted: {p.key!r}")
    for t in req.tags:
        check_key(t.key, "key")
        check_value(t.value, MAX_TAG_VALUE, "value")
    for m in req.metrics:
        check_key(m.key, "key")
        metric_value(m.value, m.key)
