"""JSON responses and error bodies shared by every route.

Rule: every error body is `{"error_code": ..., "message": ...}`; non-finite floats (metric
values may be NaN or ±Inf) are written as the strings "NaN", "Infinity", "-Infinity" the way
MLflow does, so a response is always valid JSON and never a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

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
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:
            return json.dumps(_finite(content), separators=(",", ":")).encode()


def error_body(error_code: str, message: str) -> dict[str, str]:
    return {"error_code": error_code, "message": message}


def error_response(status: int, error_code: str, message: str) -> SafeJSONResponse:
    return SafeJSONResponse(error_body(error_code, message), status_code=status)
