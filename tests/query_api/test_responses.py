"""SafeJSONResponse: orjson's speed, MLflow's spelling of non-finite floats (pure logic)."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from query_api.responses import SafeJSONResponse

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["null", "nullable", "é", "\u2028"])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=20,
)


def _spelled(value: Any) -> Any:
    """What the body must say: NaN/±Inf as MLflow's strings, everything else as is."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _spelled(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_spelled(v) for v in value]
    return value


def _no_bare_constant(token: str) -> Any:
    raise AssertionError(f"bare {token} in the body: not JSON")


@given(_values)
def test_every_body_is_valid_json_with_non_finite_floats_spelled(value: Any) -> None:
    body = SafeJSONResponse(value).body
    assert json.loads(body, parse_constant=_no_bare_constant) == _spelled(value)


def test_nan_is_never_written_as_null() -> None:
    body = json.loads(SafeJSONResponse({"a": float("nan"), "b": None, "c": [1e308 * 10]}).body)
    assert body == {"a": "NaN", "b": None, "c": ["Infinity"]}


def test_non_finite_subclasses_and_tuples_are_spelled_too() -> None:
    """numpy's float64 is a float subclass; repository rows may hold tuples."""
    import numpy as np

    value = {"a": (np.float64("nan"), 1, None), "b": [np.float64("-inf")], "c": True}
    body = json.loads(SafeJSONResponse(value).body)
    assert body == {"a": ["NaN", 1, None], "b": ["-Infinity"], "c": True}
