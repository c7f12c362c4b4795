"""Loading `.avsc` files: name resolution, expansion, fingerprints.

Rule: the `.avsc` files are the only hand-written contract. Shared named types (the
`Envelope` record, the `RunStatus` enum) live in their own file and events refer to them by
full name; `expand` inlines them so every event has one self-contained writer schema, whose
Parsing Canonical Form fingerprint (CRC-64-AVRO) identifies the event type and version.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint as _fingerprint_hex
from fastavro.schema import to_parsing_canonical_form

__all__ = [
    "AVRO_DIR",
    "NAMESPACE",
    "PRIMITIVES",
    "VERSIONS_DIR",
    "canonical_fingerprint",
    "event_names",
    "expand",
    "fullname",
    "load_current",
    "load_named",
    "load_version",
    "strip_logical_types",
    "version_dirs",
]

PACKAGE_DIR = Path(__file__).resolve().parent
AVRO_DIR = PACKAGE_DIR / "avro"
VERSIONS_DIR = PACKAGE_DIR / "versions"
NAMESPACE = "runstream.events"
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})

Schema = Any  # a JSON Avro schema: str (name), list (union) or dict


def fullname(schema: Mapping[str, Any], namespace: str = "") -> str:
    """Full name of a named schema (record, enum, fixed), inheriting `namespace`."""
    name = str(schema["name"])
    if "." in name:
        return name
    ns = str(schema.get("namespace", namespace))
    return f"{ns}.{name}" if ns else name


def load_named(directory: Path) -> dict[str, dict[str, Any]]:
    """Every `*.avsc` in `directory`, keyed by the full name of its top-level type."""
    named: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.avsc")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(schema, dict) or "name" not in schema:
            raise ValueError(f"{path}: top level must be a named type")
        if path.stem != schema["name"]:
            raise ValueError(f"{path}: file name must equal the type name {schema['name']!r}")
        named[fullname(schema)] = schema
    return named


def event_names(named: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Full names of the event records: records whose first field is `envelope`."""
    return sorted(
        name
        for name, schema in named.items()
        if schema.get("type") == "record"
        and schema.get("fields")
        and schema["fields"][0].get("name") == "envelope"
    )


def expand(schema: Schema, named: Mapping[str, Mapping[str, Any]]) -> Any:
    """A self-contained copy of `schema`: the first reference to a named type is inlined.

    Later references to the same type stay names, as Avro requires (a name is defined once).
    """
    defined: set[str] = set()

    def walk(node: Schema, namespace: str) -> Any:
        if isinstance(node, str):
            if node in PRIMITIVES:
                return node
            full = node if "." in node else f"{namespace}.{node}"
            if full in defined:
                return full
            if full not in named:
                raise ValueError(f"unknown type {node!r}")
            return walk(copy.deepcopy(dict(named[full])), namespace)
        if isinstance(node, list):
            return [walk(branch, namespace) for branch in node]
        out = dict(node)
        kind = out.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            full = fullname(out, namespace)
            defined.add(full)
            out["name"] = full.rsplit(".", 1)[-1]
            out["namespace"] = full.rsplit(".", 1)[0] if "." in full else ""
            namespace = out["namespace"]
        if kind in ("record", "error"):
            out["fields"] = [
                {**fld, "type": walk(fld["type"], namespace)} for fld in out.get("fields", [])
            ]
        elif kind == "array":
            out["items"] = walk(out["items"], namespace)
        elif kind == "map":
            out["values"] = walk(out["values"], namespace)
        elif kind not in PRIMITIVES and kind not in ("enum", "fixed"):
            out["type"] = walk(kind, namespace)  # {"type": <a name, union or schema>}
        return out

    return walk(schema, "")


def strip_logical_types(schema: Schema) -> Any:
    """A copy without `logicalType` annotations (Parsing Canonical Form ignores them anyway).

    The runtime codec uses this copy so timestamps stay `int` epoch milliseconds and UUIDs stay
    `str`: fastavro would otherwise convert them to `datetime` / `uuid.UUID` on read.
    """
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        return {
            k: (strip_logical_types(v) if k in ("type", "items", "values", "fields") else v)
            for k, v in schema.items()
            if k != "logicalType"
        }
    return schema


def canonical_fingerprint(schema: Schema) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form: the 8 bytes (little-endian) of the header."""
    return bytes.fromhex(_fingerprint_hex(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def load_current() -> dict[str, dict[str, Any]]:
    """The current event schemas, expanded, keyed by short event name (e.g. "RunCreated")."""
    named = load_named(AVRO_DIR)
    return {full.rsplit(".", 1)[-1]: expand(full, named) for full in event_names(named)}


def version_dirs() -> list[Path]:
    """Frozen version directories (`versions/v1`, `versions/v2`, ...), oldest first."""
    if not VERSIONS_DIR.is_dir():
        return []
    dirs = [d for d in VERSIONS_DIR.iterdir() if d.is_dir() and d.name[1:].isdigit()]
    return sorted((d for d in dirs if d.name.startswith("v")), key=lambda d: int(d.name[1:]))


def load_version(directory: Path) -> dict[str, dict[str, Any]]:
    """The frozen (already expanded) event schemas of one version, keyed by short name."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.avsc")):
        out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return out
