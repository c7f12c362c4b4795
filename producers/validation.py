"""Call-site validation: every rule raises a `producers.errors` exception naming the argument.

Rules (MLflow's where MLflow has one):
- Keys (metric, param, tag, attribute, artifact): 1-250 characters of ASCII letters, digits,
  `_ - . /` and space; no leading `/`, no `.` or `..` path segment (S3 refuses them).
- Metric values: int, float, bool or anything with `__float__` (numpy/torch scalars), never
  str/bytes. NaN and +/-Inf are accepted and stored as IEEE-754 doubles, like MLflow.
- Steps and epochs: int (not bool) in the int64 range; epochs >= 0.
- Timestamps: seconds since the epoch (what `time.time()` returns) or an aware `datetime`;
  numbers above 1e11 are rejected because they are almost certainly milliseconds.
- Params: None/bool/int/float/str (or numbers), stored as `str(value)`, at most 6,000 chars.
- Tags: str values, at most 8,000 chars. Attributes: JSON-serialisable None/bool/int/float/
  str/list/dict, at most 65,536 bytes of JSON text. Notes and names: see the limits below.
This module never uses `assert`: validation must survive `python -O`.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from producers.errors import InvalidArgument, InvalidKey, InvalidType, ValueTooLong

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_ATTRIBUTE_JSON_BYTES = 65536
MAX_NOTE_LENGTH = 65536
MAX_NAME_LENGTH = 250
MAX_TEXT_LENGTH = 8000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_MAX_TIMESTAMP_SECONDS = 1e11  # year 5138: anything larger is milliseconds by mistake

_KEY_RE = re.compile(r"[A-Za-z0-9_\-. /]{1,250}\Z")


def show(value: object, limit: int = 80) -> str:
    """`repr(value)` for a message, shortened; never raises (an int past Python's int-to-str
    digit limit has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        bits = value.bit_length() if isinstance(value, int) else 0
        return f"<{type(value).__name__} of {bits} bits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_key(key: object, argument: str = "key") -> str:
    """Return `key` if it follows the key rules, else raise InvalidKey/InvalidType."""
    if type(key) is not str:
        raise InvalidType(argument, f"must be a str, got {type(key).__name__}")
    if _KEY_RE.match(key) is None:
        if not key:
            raise InvalidKey(argument, "must not be empty")
        if len(key) > MAX_KEY_LENGTH:
            raise InvalidKey(argument, f"{len(key)} characters, the limit is {MAX_KEY_LENGTH}")
        bad = sorted({c for c in key if _KEY_RE.match(c) is None})
        raise InvalidKey(
            argument,
            f"{key!r} contains {bad!r}; allowed are letters, digits, '_', '-', '.', ' ', '/'",
        )
    if key.startswith("/") or any(seg in (".", "..") for seg in key.split("/")):
        raise InvalidKey(
            argument, f"{key!r} must not start with '/' or contain a '.' or '..' segment"
        )
    return key


def to_metric_value(value: object, argument: str = "value") -> float:
    """A float for a metric value (NaN/Inf kept), or InvalidType."""
    if isinstance(value, (str, bytes, bytearray)) or value is None:
        raise InvalidType(argument, f"must be a number, got {type(value).__name__}")
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError as exc:
        raise InvalidArgument(argument, f"{show(value)} does not fit a float64") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidType(argument, f"must be a number, got {type(value).__name__}") from exc


def check_int64(value: object, argument: str, *, minimum: int = INT64_MIN) -> int:
    """`value` as an int within [minimum, int64 max], or InvalidType/InvalidArgument."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InvalidType(argument, f"must be an int, got {type(value).__name__}")
        value = int(value)
    if not minimum <= value <= INT64_MAX:
        raise InvalidArgument(argument, f"{show(value)} is outside [{minimum}, {INT64_MAX}]")
    return value


def to_timestamp_ms(value: object, argument: str = "timestamp") -> int:
    """Epoch milliseconds from seconds-since-epoch or a datetime (naive = UTC)."""
    tv = type(value)
    if (tv is float or tv is int) and -_MAX_TIMESTAMP_SECONDS <= value <= _MAX_TIMESTAMP_SECONDS:  # type: ignore[operator]
        return int(round(value * 1000))  # type: ignore[operator]
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidType(
            argument, f"must be seconds since the epoch or a datetime, got {type(value).__name__}"
        )
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf  # an int beyond float64: refused below like any huge number
    if not math.isfinite(seconds) or abs(seconds) > _MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(
            argument,
            f"{show(value)} is not seconds since the epoch (milliseconds? divide by 1000)",
        )
    return int(round(seconds * 1000))


def param_value(value: object, argument: str = "value") -> str:
    """The stored string of a param value (`str(value)`), or InvalidType/ValueTooLong."""
    if value is None:
        text = "None"
    elif isinstance(value, (str, bool, numbers.Number)):
        text = _text(value, argument)
    else:
        raise InvalidType(
            argument,
            f"params are None/bool/int/float/str, got {type(value).__name__}; "
            "use log_attribute for lists and dicts",
        )
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        raise ValueTooLong(
            argument, f"{len(text)} characters, the limit is {MAX_PARAM_VALUE_LENGTH}"
        )
    return text


def _text(value: object, argument: str) -> str:
    """`str(value)`; an int over Python's int-to-str digit limit is ValueTooLong."""
    try:
        return str(value)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        raise ValueTooLong(argument, "an int with too many digits to convert to text") from None


def tag_value(value: object, argument: str = "value") -> str:
    """A tag value: str (numbers/bools converted with str()), at most 8,000 characters."""
    if isinstance(value, (bool, numbers.Number)):
        value = _text(value, argument)
    if not isinstance(value, str):
        raise InvalidType(argument, f"must be a str, got {type(value).__name__}")
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise ValueTooLong(
            argument, f"{len(value)} characters, the limit is {MAX_TAG_VALUE_LENGTH}"
        )
    return value


def _check_json(value: object, argument: str, depth: int = 0) -> None:
    if depth > 32:
        raise InvalidArgument(argument, "nested deeper than 32 levels")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(argument, f"{value} is not representable in JSON")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_json(item, argument, depth + 1)
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise InvalidType(argument, f"dict keys must be str, got {type(k).__name__}")
            _check_json(item, argument, depth + 1)
        return
    raise InvalidType(
        argument,
        f"attributes are None/bool/int/float/str/list/dict, got {type(value).__name__}",
    )


def attribute_json(value: object, argument: str = "value") -> str:
    """Canonical JSON text of an attribute value, or InvalidType/ValueTooLong."""
    _check_json(value, argument)
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError as exc:  # an int over Python's int-to-str digit limit
        raise ValueTooLong(argument, f"does not convert to JSON text: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > MAX_ATTRIBUTE_JSON_BYTES:
        raise ValueTooLong(
            argument, f"{size} bytes of JSON, the limit is {MAX_ATTRIBUTE_JSON_BYTES}"
        )
    return text


def check_text(value: object, argument: str, limit: int) -> str:
    """A str of at most `limit` characters."""
    if not isinstance(value, str):
        raise InvalidType(argument, f"must be a str, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueTooLong(argument, f"{len(value)} characters, the limit is {limit}")
    return value


def check_mapping(value: object, argument: str) -> Mapping[str, Any]:
    """`value` if it is a Mapping, else InvalidType."""
    if not isinstance(value, Mapping):
        raise InvalidType(argument, f"must be a dict, got {type(value).__name__}")
    return value
