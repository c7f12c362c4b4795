"""JSON responses and error bodies shared by every route.

Rule: every error body is `{"error_code": ..., "message": ...}`; non-finite floats (metric
values may be NaN or ±Inf) are written as the strings "NaN", "Infinity", "-Infinity" the way
MLflow does, so a response is always valid JSON and never a 500.

Bodies are encoded by orjson (~6x faster than `json` on a 1,000-bucket view). orjson writes
a non-finite float as `null`, so a body whose encoding holds `null` anywhere (a real None,
or text containing it) is encoded again by `json`, which keeps "NaN" distinct from null.
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


class SafeJSONResponse(JSONResponse):
    """JSONResponse that never fails on NaN/Inf."""

    def render(self, content: Any) -> bytes:
        try:
            fast = orjson.dumps(content)
        except TypeError:  # e.g. an int beyond 64 bits: `json` writes it
            fast = b"null"
        if b"null" not in fast:
            return fast
        try:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:
            return json.dumps(_finite(content), separators=(",", ":")).encode()


def error_body(error_code: str, message: str) -> dict[str, str]:
    return {"error_code": error_code, "message": message}


def error_response(status: int, error_code: str, message: str) -> SafeJSONResponse:
    return SafeJSONResponse(error_body(error_code, message), status_code=status)
