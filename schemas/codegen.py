"""Generate `schemas/events.py` (typed event classes) from `schemas/avro/*.avsc`.

Rule: the `.avsc` files are the only hand-written copy of the fields; the classes are
derived from them by this generator and a test fails when the checked-in file has drifted.

Usage::

    python -m schemas.codegen           # rewrite schemas/events.py
    python -m schemas.codegen --check   # exit 1 if schemas/events.py is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .avsc import AVRO_DIR, PACKAGE_DIR, PRIMITIVES, event_names, fullname, load_named

__all__ = ["EVENTS_PY", "generate", "main"]

EVENTS_PY = PACKAGE_DIR / "events.py"
_WIDTH = 100
_PY_PRIMITIVES = {
    "null": "None",
    "boolean": "bool",
    "int": "int",
    "long": "int",
    "float": "float",
    "double": "float",
    "bytes": "bytes",
    "string": "str",
}

Expr = Callable[[str], str]


@dataclass(frozen=True)
class _PyType:
    annotation: str
    to_record: Optional[Expr]  # None: the value is written as it is
    from_record: Optional[Expr]  # None: the decoded value is used as it is


@dataclass(frozen=True)
class _Field:
    name: str
    doc: str
    type: _PyType
    default: Optional[str]  # Python expression for the dataclass default; None = required
    missing: Optional[str]  # Python expression used by from_record when the key is absent


class _Generator:
    def __init__(self, named: Mapping[str, Mapping[str, Any]]) -> None:
        self.named = named
        self.enums: dict[str, Mapping[str, Any]] = {}
        self.records: dict[str, Mapping[str, Any]] = {}

    # -- type mapping -------------------------------------------------------------------
    def py_type(self, schema: Any, namespace: str) -> _PyType:
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return _PyType(_PY_PRIMITIVES[schema], None, None)
            full = schema if "." in schema else f"{namespace}.{schema}"
            return self.named_type(self.named[full], namespace)
        if isinstance(schema, list):
            return self.union(schema, namespace)
        kind = schema["type"]
        if kind in PRIMITIVES:
            return _PyType(_PY_PRIMITIVES[kind], None, None)
        if kind in ("record", "enum"):
            return self.named_type(schema, namespace)
        if kind == "array":
            item = self.py_type(schema["items"], namespace)
            return _PyType(
                f"Sequence[{item.annotation}]",
                _each(item.to_record, "[{} for x in {}]"),
                _each(item.from_record, "[{} for x in {}]"),
            )
        if kind == "map":
            value = self.py_type(schema["values"], namespace)
            return _PyType(
                f"Mapping[str, {value.annotation}]",
                _each(value.to_record, "{{k: {} for k, x in {}.items()}}"),
                _each(value.from_record, "{{k: {} for k, x in {}.items()}}"),
            )
        raise NotImplementedError(f"codegen does not support type {kind!r}")

    def named_type(self, schema: Mapping[str, Any], namespace: str) -> _PyType:
        full = fullname(schema, namespace)
        cls = full.rsplit(".", 1)[-1]
        if schema["type"] == "enum":
            self.enums.setdefault(cls, schema)
            return _PyType(cls, None, lambda v: f"{cls}({v})")
        if schema["type"] == "record":
            if cls not in self.records:
                self.records[cls] = {**schema, "namespace": full.rsplit(".", 1)[0]}
            return _PyType(cls, lambda v: f"{v}.to_record()", lambda v: f"{cls}.from_record({v})")
        raise NotImplementedError(f"codegen does not support named type {schema['type']!r}")

    def union(self, schema: Sequence[Any], namespace: str) -> _PyType:
        if len(schema) != 2 or schema[0] != "null":
            raise NotImplementedError(f"only ['null', T] unions are supported, got {schema}")
        inner = self.py_type(schema[1], namespace)

        def optional(conv: Optional[Expr]) -> Optional[Expr]:
            if conv is None:
                return None
            return lambda v: f"None if {v} is None else {conv(v)}"

        return _PyType(
            f"Optional[{inner.annotation}]", optional(inner.to_record), optional(inner.from_record)
        )

    def fields(self, schema: Mapping[str, Any]) -> list[_Field]:
        namespace = str(schema["namespace"])
        out = []
        for fld in schema["fields"]:
            py = self.py_type(fld["type"], namespace)
            default = missing = None
            if "default" in fld:
                default, missing = _default(fld["type"], fld["default"], py)
            out.append(_Field(fld["name"], str(fld.get("doc", "")), py, default, missing))
        # Python needs required fields first; Avro order is kept everywhere else.
        return [f for f in out if f.default is None] + [f for f in out if f.default is not None]


def _each(conv: Optional[Expr], template: str) -> Optional[Expr]:
    if conv is None:
        return None
    return lambda v: template.format(conv("x"), v)


def _default(avro_type: Any, value: Any, py: _PyType) -> tuple[str, str]:
    """(dataclass default, from_record fallback) for an Avro field default."""
    kind = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    if kind == "map":
        return "field(default_factory=dict)", "{}"
    if kind == "array":
        return "field(default_factory=list)", "[]"
    if value is None:
        return "None", "None"
    literal = json.dumps(value) if isinstance(value, str) else repr(value)
    if py.from_record is not None and isinstance(value, str):  # enum symbol
        return f"{py.annotation}.{value}", literal
    return literal, literal


def _docstring(text: str, indent: int, attributes: Sequence[_Field] = ()) -> list[str]:
    pad = " " * indent
    width = _WIDTH - indent
    text = text.replace("\\", "\\\\").strip() or "(undocumented)"
    lines = textwrap.wrap(text, width - 6)
    if not attributes and len(lines) == 1:
        return [f'{pad}"""{lines[0]}"""']
    out = [f'{pad}"""{lines[0]}'] + [f"{pad}{line}" for line in lines[1:]]
    if attributes:
        out += ["", f"{pad}Attributes:"]
        for fld in attributes:
            doc = fld.doc.replace("\\", "\\\\") or "(undocumented)"
            wrapped = textwrap.wrap(
                f"{fld.name}: {doc}",
                width - 4,
                initial_indent=" " * 4,
                subsequent_indent=" " * 8,
            )
            out += [f"{pad}{line}" for line in wrapped]
    out.append(f'{pad}"""')
    return out


def _enum_source(name: str, schema: Mapping[str, Any]) -> list[str]:
    lines = [f"class {name}(str, Enum):"]
    lines += _docstring(str(schema.get("doc", "")), 4)
    lines.append("")
    lines += [f'    {symbol} = "{symbol}"' for symbol in schema["symbols"]]
    return lines


def _record_source(name: str, fields: Sequence[_Field], doc: str, is_event: bool) -> list[str]:
    lines = ["@_frozen", f"class {name}:"]
    lines += _docstring(doc, 4, fields)
    lines.append("")
    if is_event:
        lines += [f'    NAME: ClassVar[str] = "{name}"', '    """Avro record name."""', ""]
    for fld in fields:
        default = f" = {fld.default}" if fld.default is not None else ""
        lines.append(f"    {fld.name}: {fld.type.annotation}{default}")
    lines += [
        "",
        "    def to_record(self) -> dict[str, Any]:",
        '        """The plain Avro record (a dict) of this instance."""',
        "        return {",
    ]
    for fld in fields:
        value = f"self.{fld.name}"
        expr = fld.type.to_record(value) if fld.type.to_record else value
        lines.append(f'            "{fld.name}": {expr},')
    lines += [
        "        }",
        "",
        "    @classmethod",
        f"    def from_record(cls, record: Mapping[str, Any]) -> {name}:",
        '        """An instance from a plain Avro record (as `decode_record` returns)."""',
        "        return cls(",
    ]
    for fld in fields:
        if fld.missing is None:
            value = f'record["{fld.name}"]'
        else:
            value = f'record.get("{fld.name}", {fld.missing})'
        expr = fld.type.from_record(value) if fld.type.from_record else value
        lines.append(f"            {fld.name}={expr},")
    lines.append("        )")
    return lines


_HEADER = '''\
"""Typed event classes, one frozen dataclass per event record.

GENERATED — do not edit; run `python -m schemas.codegen`. Source: schemas/avro/*.avsc.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Optional, TypeVar, Union

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_kwargs: Any) -> Any:
        return lambda decorated: decorated


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def _frozen(cls: type[_T]) -> type[_T]:
    """Frozen dataclass, with __slots__ where the Python version supports it (3.10+)."""
    if sys.version_info >= (3, 10):
        return dataclass(frozen=True, slots=True)(cls)
    return dataclass(frozen=True)(cls)
'''


def generate(avro_dir: Path = AVRO_DIR) -> str:
    """The source text of `events.py` for the `.avsc` files in `avro_dir`."""
    named = load_named(avro_dir)
    gen = _Generator(named)
    events = [full.rsplit(".", 1)[-1] for full in event_names(named)]
    bodies: list[tuple[str, list[_Field], str, bool]] = []
    # Walk events first so shared types are discovered; emit dependencies before users.
    for full in event_names(named):
        schema = {**named[full], "namespace": full.rsplit(".", 1)[0]}
        fields = gen.fields(schema)
        bodies.append((full.rsplit(".", 1)[-1], fields, str(schema.get("doc", "")), True))
    records = [
        (name, gen.fields(schema), str(schema.get("doc", "")), False)
        for name, schema in gen.records.items()
        if name not in events
    ]
    blocks: list[list[str]] = [
        _enum_source(name, schema) for name, schema in sorted(gen.enums.items())
    ]
    blocks += [_record_source(*body) for body in records + bodies]
    exported = sorted([*gen.enums, *(r[0] for r in records), *events, "EVENT_TYPES", "Event"])
    out = [_HEADER.rstrip("\n"), "", ""]
    out += ["__all__ = ["] + [f'    "{name}",' for name in exported] + ["]"]
    for block in blocks:
        out += ["", "", *block]
    out += ["", "", "Event = Union["] + [f"    {name}," for name in events] + ["]"]
    out += ['"""Any event (a union of the event classes)."""', ""]
    out += ["EVENT_TYPES: dict[str, type[Event]] = {"]
    out += [f'    "{name}": {name},' for name in events] + ["}"]
    out += ['"""Event record name -> class."""']
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: write `events.py`, or with `--check` report drift (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m schemas.codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if events.py is stale")
    args = parser.parse_args(argv)
    text = generate()
    current = EVENTS_PY.read_text(encoding="utf-8") if EVENTS_PY.exists() else ""
    if args.check:
        if current != text:
            sys.stderr.write(f"{EVENTS_PY} is stale: run `python -m schemas.codegen`\n")
            return 1
        return 0
    if current != text:
        EVENTS_PY.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {EVENTS_PY}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
