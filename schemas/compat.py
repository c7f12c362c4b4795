"""Schema evolution guard: frozen versions, BACKWARD_TRANSITIVE checks, example decoding.

Rule: every released schema version is frozen under `schemas/versions/vN/` (self-contained
`.avsc` per event + `examples/<Event>.json`) and never edited. The current schemas must
(1) equal the latest frozen version (edit → freeze a new version, never edit one in place),
(2) read data written by EVERY frozen version (Avro schema resolution, writer = old,
reader = current), (3) not remove a field that an older version requires (no default), and
(4) actually decode every frozen example with fastavro schema resolution. Each problem is
reported as ``Event.field.path: reason``.

Examples are JSON arrays of records in the Avro JSON encoding (the Avro spec's: a union value
is ``{"string": "x"}`` or null, bytes are strings of code points U+0000..U+00FF).

Usage::

    python -m schemas.compat            # check (+ codegen drift); exit 1 printing
                                        # "Event.field: reason" lines
    python -m schemas.compat --freeze   # freeze the current schemas as the next version
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, cast

from fastavro import json_reader, json_writer, parse_schema, schemaless_reader, schemaless_writer

from . import avsc
from .codec import EXPERIMENT_EVENTS
from .codegen import EVENTS_PY, generate
from .errors import IncompatibleSchema, InvalidEvent
from .events import EVENT_TYPES
from .metrics import check_columns
from .resolution import removed_field_issues, resolution_issues
from .validate import compile_validator

__all__ = [
    "Version",
    "check",
    "example_issues",
    "freeze",
    "from_avro_json",
    "load_versions",
    "main",
    "removed_field_issues",
    "resolution_issues",
    "to_avro_json",
    "upgrade_examples",
]


@dataclass(frozen=True)
class Version:
    """A frozen schema version: `schemas` and `examples` keyed by event name."""

    label: str
    schemas: Mapping[str, Any]
    examples: Mapping[str, Sequence[Any]]


def _join(name: str, path: str) -> str:
    return f"{name}.{path}" if path else name


# -- examples ---------------------------------------------------------------------------------


def to_avro_json(record: Mapping[str, Any], schema: Any) -> Any:
    """One record in the Avro JSON encoding (a JSON value) under `schema`."""
    out = io.StringIO()
    json_writer(out, parse_schema(avsc.strip_logical_types(schema)), [record])
    return json.loads(out.getvalue())


def from_avro_json(value: Any, schema: Any) -> dict[str, Any]:
    """The record a JSON value in the Avro JSON encoding stands for under `schema`."""
    parsed = parse_schema(avsc.strip_logical_types(schema))
    records = list(json_reader(io.StringIO(json.dumps(value)), parsed))
    if len(records) != 1:
        raise ValueError(f"expected one record, got {len(records)}")
    return dict(cast("Mapping[str, Any]", records[0]))


def _read(body: io.BytesIO, writer: Any, reader: Any) -> dict[str, Any]:
    """Decode one binary record written with `writer` into `reader` (schema resolution)."""
    return cast("dict[str, Any]", schemaless_reader(body, writer, reader))


def _content_issues(name: str, record: Mapping[str, Any]) -> Optional[str]:
    """The codec's checks beyond the schema (run scope, packed columns), as text."""
    run_id = record["envelope"].get("run_id")
    if (name in EXPERIMENT_EVENTS) != (run_id is None):
        return "envelope.run_id: null for experiment events, required for run events"
    if name == "MetricsLogged":
        try:
            check_columns(record)
        except InvalidEvent as exc:
            return f"{exc.field}: {exc.reason}"
    return None


def example_issues(
    name: str, label: str, writer: Any, examples: Sequence[Any], reader: Any
) -> list[IncompatibleSchema]:
    """Check the frozen examples of one event type of version `label`.

    Each must be valid under its own (writer) schema, and its binary encoding must decode with
    fastavro schema resolution (writer = old, reader = current) into a valid current record.
    """
    issues: list[IncompatibleSchema] = []
    if not examples:
        return [IncompatibleSchema(name, f"{label} has no examples (examples/{name}.json)")]
    validate_old, validate_new = compile_validator(writer), compile_validator(reader)
    old_parsed = parse_schema(avsc.strip_logical_types(writer))
    new_parsed = parse_schema(avsc.strip_logical_types(reader))
    for i, value in enumerate(examples):
        where = f"{label} example {i}"
        try:
            record = from_avro_json(value, writer)
            validate_old(record, "")
        except InvalidEvent as exc:
            issues.append(IncompatibleSchema(_join(name, exc.field), f"{where}: {exc.reason}"))
            continue
        except Exception as exc:  # fastavro's JSON reader raises assorted errors
            issues.append(IncompatibleSchema(name, f"{where} is not valid Avro JSON: {exc!r}"))
            continue
        problem = _content_issues(name, record)
        if problem:
            issues.append(IncompatibleSchema(name, f"{where}: {problem}"))
            continue
        body = io.BytesIO()
        schemaless_writer(body, old_parsed, record)
        body.seek(0)
        try:
            decoded = _read(body, old_parsed, new_parsed)
            validate_new(decoded, "")
            problem = _content_issues(name, decoded)
            if problem:
                raise ValueError(problem)
            if name in EVENT_TYPES:
                EVENT_TYPES[name].from_record(decoded)
        except Exception as exc:
            issues.append(
                IncompatibleSchema(
                    name, f"{where} does not decode with the current reader: {exc!r}"
                )
            )
    return issues


# -- versions ---------------------------------------------------------------------------------


def load_versions(directories: Optional[Sequence[Path]] = None) -> list[Version]:
    """The frozen versions (oldest first) with their schemas and examples."""
    versions = []
    for directory in avsc.version_dirs() if directories is None else directories:
        examples: dict[str, list[Any]] = {}
        for path in sorted((directory / "examples").glob("*.json")):
            examples[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        versions.append(Version(directory.name, avsc.load_version(directory), examples))
    return versions


def _first_difference(a: Any, b: Any, path: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.get("type") in ("record", "error") and b.get("type") == a.get("type"):
            af = {f["name"]: f for f in a.get("fields", [])}
            bf = {f["name"]: f for f in b.get("fields", [])}
            for fname in [*af, *(n for n in bf if n not in af)]:
                if af.get(fname) != bf.get(fname):
                    sub = f"{path}.{fname}" if path else fname
                    if fname in af and fname in bf:
                        return _first_difference(af[fname], bf[fname], sub)
                    return sub
        for key in [*a, *(k for k in b if k not in a)]:
            if key != "fields" and a.get(key) != b.get(key):
                if key == "type":
                    return _first_difference(a.get(key), b.get(key), path)
                return f"{path} ({key})" if path else f"({key})"
        if "fields" in a or "fields" in b:
            return f"{path} (field order)" if path else "(field order)"
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b):
            if x != y:
                return _first_difference(x, y, path)
    return path


def check(
    current: Optional[Mapping[str, Any]] = None, versions: Optional[Sequence[Version]] = None
) -> list[IncompatibleSchema]:
    """Every compatibility problem of `current` against the frozen `versions` (default: repo)."""
    current = avsc.load_current() if current is None else current
    versions = load_versions() if versions is None else versions
    issues: list[IncompatibleSchema] = []
    if not versions:
        return [IncompatibleSchema("schemas", "no frozen version: run --freeze")]
    latest = versions[-1]
    for name, schema in current.items():
        frozen = latest.schemas.get(name)
        if frozen is None:
            issues.append(
                IncompatibleSchema(
                    name,
                    f"new event type not in frozen {latest.label}: freeze a new version "
                    "(python -m schemas.compat --freeze)",
                )
            )
        elif frozen != schema:
            where = _first_difference(frozen, schema, "")
            issues.append(
                IncompatibleSchema(
                    _join(name, where),
                    f"differs from frozen {latest.label}: released versions are immutable; "
                    "freeze a new version (python -m schemas.compat --freeze)",
                )
            )
    for version in versions:
        for name, writer in version.schemas.items():
            reader = current.get(name)
            if reader is None:
                issues.append(
                    IncompatibleSchema(
                        name,
                        f"event type removed, but {version.label} has it: its messages would "
                        "become undecodable (breaking: new topic)",
                    )
                )
                continue
            issues += resolution_issues(writer, reader, name)
            issues += removed_field_issues(writer, reader, name, version.label)
            issues += example_issues(
                name, version.label, writer, version.examples.get(name, []), reader
            )
    return _unique(issues)


def _unique(issues: Sequence[IncompatibleSchema]) -> list[IncompatibleSchema]:
    seen: set[str] = set()
    out = []
    for issue in issues:
        if str(issue) not in seen:
            seen.add(str(issue))
            out.append(issue)
    return out


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=True) + "\n"


def freeze() -> Optional[Path]:
    """Freeze the current schemas as versions/v(N+1); None when they equal vN already.

    Examples of event types that exist in vN are carried over, resolved into the new schema;
    new event types need examples written by hand (the check fails until they exist).
    """
    current = avsc.load_current()
    versions = load_versions()
    if versions and dict(versions[-1].schemas) == current:
        return None
    number = int(versions[-1].label[1:]) + 1 if versions else 1
    target = avsc.VERSIONS_DIR / f"v{number}"
    (target / "examples").mkdir(parents=True)
    for name, schema in current.items():
        (target / f"{name}.avsc").write_text(_dump(schema), encoding="utf-8")
    if versions:
        previous = versions[-1]
        for name, values in previous.examples.items():
            if name in current:
                upgraded = list(upgrade_examples(values, previous.schemas[name], current[name]))
                (target / "examples" / f"{name}.json").write_text(_dump(upgraded), "utf-8")
    return target


def upgrade_examples(values: Sequence[Any], writer: Any, reader: Any) -> Iterator[Any]:
    """Avro-JSON examples written with `writer`, resolved into `reader` (Avro JSON again)."""
    old_parsed = parse_schema(avsc.strip_logical_types(writer))
    new_parsed = parse_schema(avsc.strip_logical_types(reader))
    for value in values:
        body = io.BytesIO()
        schemaless_writer(body, old_parsed, from_avro_json(value, writer))
        body.seek(0)
        yield to_avro_json(_read(body, old_parsed, new_parsed), reader)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m schemas.compat", description=__doc__)
    parser.add_argument("--freeze", action="store_true", help="freeze the next version")
    args = parser.parse_args(argv)
    if args.freeze:
        target = freeze()
        sys.stdout.write(f"froze {target}\n" if target else "nothing to freeze\n")
        return 0
    issues = check()
    if EVENTS_PY.read_text(encoding="utf-8") != generate():
        issues.append(
            IncompatibleSchema(
                "events.py", "generated code is stale: run python -m schemas.codegen"
            )
        )
    for issue in issues:
        sys.stdout.write(f"{issue}\n")
    if issues:
        sys.stdout.write(f"{len(issues)} compatibility problem(s)\n")
        return 1
    sys.stdout.write("schemas compatible with every frozen version\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
