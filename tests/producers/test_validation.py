"""Call-site validation: clear exceptions naming the argument, MLflow's key rules, NaN kept."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from producers import validation as v
from producers.errors import InvalidArgument, InvalidKey, InvalidType, ValueTooLong


@pytest.mark.parametrize("key", ["loss", "train/loss", "a-b_c.d e", "x" * 250, "0"])
def test_valid_keys(key: str) -> None:
    assert v.check_key(key) == key


@pytest.mark.parametrize(
    ("key", "exc", "match"),
    [
        ("", InvalidKey, "must not be empty"),
        ("x" * 251, InvalidKey, "251 characters"),
        ("loss!", InvalidKey, r"\['!'\]"),
        ("a\nb", InvalidKey, "contains"),
        ("/abs", InvalidKey, "must not start"),
        ("a/../b", InvalidKey, r"'\.\.'"),
        (3, InvalidType, "must be a str"),
        (None, InvalidType, "must be a str"),
    ],
)
def test_invalid_keys(key: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match) as info:
        v.check_key(key, "key")
    assert str(info.value).startswith("key: ")


def test_exceptions_are_builtin_subclasses() -> None:
    assert issubclass(InvalidKey, ValueError)
    assert issubclass(InvalidType, TypeError)


def test_metric_values_nan_inf_kept_strings_refused() -> None:
    assert math.isnan(v.to_metric_value(float("nan")))
    assert v.to_metric_value(float("inf")) == math.inf
    assert v.to_metric_value(3) == 3.0
    assert v.to_metric_value(True) == 1.0
    for bad in ("1.0", b"1", None, [1], object()):
        with pytest.raises(InvalidType, match="value: must be a number"):
            v.to_metric_value(bad)
    with pytest.raises(InvalidArgument, match="float64"):
        v.to_metric_value(10**400)


def test_int64_and_epoch_rules() -> None:
    assert v.check_int64(5, "step") == 5
    with pytest.raises(InvalidType, match="step"):
        v.check_int64(1.5, "step")
    with pytest.raises(InvalidType):
        v.check_int64(True, "step")
    with pytest.raises(InvalidArgument, match="outside"):
        v.check_int64(2**63, "step")
    with pytest.raises(InvalidArgument, match="epoch"):
        v.check_int64(-1, "epoch", minimum=0)


def test_timestamps() -> None:
    assert v.to_timestamp_ms(1700000000.123) == 1700000000123
    dt = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert v.to_timestamp_ms(dt) == 1704067200000
    assert v.to_timestamp_ms(dt.replace(tzinfo=None)) == 1704067200000
    with pytest.raises(InvalidArgument, match="milliseconds"):
        v.to_timestamp_ms(1700000000123)
    with pytest.raises(InvalidType):
        v.to_timestamp_ms("2024-01-01")


def test_params_tags_attributes() -> None:
    assert v.param_value(0.1) == "0.1"
    assert v.param_value(None) == "None"
    with pytest.raises(InvalidType, match="log_attribute"):
        v.param_value([1, 2])
    with pytest.raises(ValueTooLong, match="6001"):
        v.param_value("x" * 6001)
    assert v.tag_value(3) == "3"
    with pytest.raises(ValueTooLong):
        v.tag_value("x" * 8001)
    assert v.attribute_json({"b": [1, None], "a": True}) == '{"a":true,"b":[1,null]}'
    with pytest.raises(InvalidType, match="set"):
        v.attribute_json({1, 2})
    with pytest.raises(InvalidArgument, match="JSON"):
        v.attribute_json(float("nan"))
    with pytest.raises(ValueTooLong):
        v.attribute_json("x" * 70000)
