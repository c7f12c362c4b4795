"""Encode-time validation: a record either matches its schema or the error names the field.

Rule: fastavro's writer is lenient (it truncates 1.5 into a long, writes "yes" as true), so
every record is checked against its schema before it is written. Validators are compiled
once per schema into closures; the cost is a few microseconds per event, independent of the
number of metric points (those travel as packed `bytes` columns).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Callable

from .avsc import PRIMITIVES, fullname
from .errors import InvalidEvent

__all__ = ["Check", "compile_validator"]

Check = Callable[[Any, str], None]
"""`check(datum, path)` raises `InvalidEvent(path, reason)` unless datum matches."""

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _describe(datum: Any) -> str:
    text = repr(datum)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(datum).__name__} {text}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_null(datum: Any, path: str) -> None:
    if datum is not None:
        raise InvalidEvent(path, f"expected null, got {_describe(datum)}")


def _check_boolean(datum: Any, path: str) -> None:
    if not isinstance(datum, bool):
        raise InvalidEvent(path, f"expected boolean, got {_describe(datum)}")


def _integer_check(avro_type: str, bounds: tuple[int, int]) -> Check:
    low, high = bounds

    def check(datum: Any, path: str) -> None:
        if not isinstance(datum, int) or isinstance(datum, bool):
            raise InvalidEvent(path, f"expected {avro_type} (int), got {_describe(datum)}")
        if not low <= datum <= high:
            raise InvalidEvent(path, f"{datum} is out of range for {avro_type}")

    return check


def _floating_check(avro_type: str) -> Check:
    def check(datum: Any, path: str) -> None:
        if not isinstance(datum, (float, int)) or isinstance(datum, bool):
            raise InvalidEvent(path, f"expected {avro_type} (float), got {_describe(datum)}")

    return check


def _check_string(datum: Any, path: str) -> None:
    if not isinstance(datum, str):
        raise InvalidEvent(path, f"expected string, got {_describe(datum)}")


def _check_bytes(datum: Any, path: str) -> None:
    if not isinstance(datum, (bytes, bytearray)):
        raise InvalidEvent(path, f"expected bytes, got {_describe(datum)}")


def _check_uuid(datum: Any, path: str) -> None:
    _check_string(datum, path)
    try:
        uuid.UUID(datum)
    except ValueError:
        raise InvalidEvent(path, f"expected a UUID string, got {datum!r}") from None


_PRIMITIVE_CHECKS: dict[str, Check] = {
    "null": _check_null,
    "boolean": _check_boolean,
    "int": _integer_check("int", _INT32),
    "long": _integer_check("long", _INT64),
    "float": _floating_check("float"),
    "double": _floating_check("double"),
    "bytes": _check_bytes,
    "string": _check_string,
}


def compile_validator(schema: Any) -> Check:
    """Compile a self-contained (expanded) Avro schema into a `Check` function."""
    return _Compiler().compile(schema, "")


class _Compiler:
    def __init__(self) -> None:
        self.named: dict[str, Check] = {}

    def compile(self, schema: Any, namespace: str) -> Check:
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return _PRIMITIVE_CHECKS[schema]
            full = schema if "." in schema else f"{namespace}.{schema}"
            return self._reference(full)
        if isinstance(schema, list):
            return self._union([self.compile(s, namespace) for s in schema], schema)
        kind = schema["type"]
        if kind in PRIMITIVES:
            if kind == "string" and schema.get("logicalType") == "uuid":
                return _check_uuid
            return _PRIMITIVE_CHECKS[kind]
        if kind in ("record", "error"):
            return self._record(schema, namespace)
        if kind == "enum":
            return self._enum(schema, namespace)
        if kind == "fixed":
            return self._fixed(schema, namespace)
        if kind == "array":
            return self._array(self.compile(schema["items"], namespace))
        if kind == "map":
            return self._map(self.compile(schema["values"], namespace))
        return self.compile(kind, namespace)

    def _reference(self, full: str) -> Check:
        named = self.named

        def check(datum: Any, path: str) -> None:
            named[full](datum, path)

        if full not in named:
            raise ValueError(f"unknown type {full!r}")
        return check

    def _record(self, schema: Mapping[str, Any], namespace: str) -> Check:
        full = fullname(schema, namespace)
        ns = full.rsplit(".", 1)[0] if "." in full else ""
        fields: list[tuple[str, Check, bool]] = []
        names: frozenset[str] = frozenset(f["name"] for f in schema["fields"])

        def check(datum: Any, path: str) -> None:
            if not isinstance(datum, Mapping):
                raise InvalidEvent(path, f"expected a record (mapping), got {_describe(datum)}")
            for name, check_field, has_default in fields:
                if name in datum:
                    check_field(datum[name], _join(path, name))
                elif not has_default:
                    raise InvalidEvent(_join(path, name), "missing (required field, no default)")
            if len(datum) > len(names) or not names.issuperset(datum):
                extra = sorted(str(k) for k in datum if k not in names)
                raise InvalidEvent(_join(path, extra[0]), "unknown field (not in the schema)")

        self.named[full] = check
        for field in schema["fields"]:
            fields.append((field["name"], self.compile(field["type"], ns), "default" in field))
        return check

    def _enum(self, schema: Mapping[str, Any], namespace: str) -> Check:
        full = fullname(schema, namespace)
        symbols = frozenset(schema["symbols"])
        listed = ", ".join(schema["symbols"])

        def check(datum: Any, path: str) -> None:
            if not isinstance(datum, str) or datum not in symbols:
                raise InvalidEvent(path, f"expected one of {listed}, got {_describe(datum)}")

        self.named[full] = check
        return check

    def _fixed(self, schema: Mapping[str, Any], namespace: str) -> Check:
        size = int(schema["size"])

        def check(datum: Any, path: str) -> None:
            _check_bytes(datum, path)
            if len(datum) != size:
                raise InvalidEvent(path, f"expected {size} bytes, got {len(datum)}")

        self.named[fullname(schema, namespace)] = check
        return check

    @staticmethod
    def _array(check_item: Check) -> Check:
        def check(datum: Any, path: str) -> None:
            if not isinstance(datum, (list, tuple)):
                raise InvalidEvent(path, f"expected an array (list), got {_describe(datum)}")
            for i, item in enumerate(datum):
                check_item(item, f"{path}[{i}]")

        return check

    @staticmethod
    def _map(check_value: Check) -> Check:
        def check(datum: Any, path: str) -> None:
            if not isinstance(datum, Mapping):
                raise InvalidEvent(path, f"expected a map (dict), got {_describe(datum)}")
            for key, value in datum.items():
                if not isinstance(key, str):
                    raise InvalidEvent(path, f"map keys must be strings, got {_describe(key)}")
                check_value(value, f"{path}[{key!r}]")

        return check

    @staticmethod
    def _union(branches: list[Check], schema: list[Any]) -> Check:
        if len(branches) == 2 and schema[0] == "null":
            inner = branches[1]

            def check_optional(datum: Any, path: str) -> None:
                if datum is not None:
                    inner(datum, path)

            return check_optional

        def check(datum: Any, path: str) -> None:
            first: InvalidEvent | None = None
            for branch in branches:
                try:
                    branch(datum, path)
                except InvalidEvent as exc:
                    first = first or exc
                else:
                    return
            raise InvalidEvent(
                path, f"matches no branch of the union: {first.reason if first else ''}"
            )

        return check
