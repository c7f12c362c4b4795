"""Avro schema resolution rules: can a reader schema read what a writer schema wrote?

Rule: these are the Avro specification's resolution rules (records by field name with reader
defaults, enums by symbol with the reader's default, legal promotions int -> long -> float ->
double and string <-> bytes, unions branch by branch), applied to two schemas without any
data, so a breaking change is reported before a message is written. Each problem names the
field by its dotted path and says why. Used by `schemas.compat`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import avsc
from .errors import IncompatibleSchema

__all__ = ["removed_field_issues", "resolution_issues"]

_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
_NAMED = ("record", "error", "enum", "fixed")


def _names(schema: Any) -> dict[str, Any]:
    """Full name -> definition for every named type in a self-contained schema."""
    found: dict[str, Any] = {}

    def walk(node: Any, namespace: str) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, namespace)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in _NAMED:
                full = avsc.fullname(node, namespace)
                found[full] = node
                namespace = full.rsplit(".", 1)[0] if "." in full else ""
            for fld in node.get("fields", []) if kind in ("record", "error") else []:
                walk(fld["type"], namespace)
            if kind == "array":
                walk(node["items"], namespace)
            elif kind == "map":
                walk(node["values"], namespace)
            elif isinstance(kind, (dict, list)):
                walk(kind, namespace)

    walk(schema, "")
    return found


def _deref(node: Any, names: Mapping[str, Any]) -> Any:
    """The definition behind a name; dict-wrapped types unwrapped ({"type": "long"} -> long)."""
    while True:
        if isinstance(node, str):
            if node in avsc.PRIMITIVES:
                return node
            match = names.get(node) or next(
                (v for k, v in names.items() if k.rsplit(".", 1)[-1] == node), None
            )
            if match is None:
                raise ValueError(f"unknown type {node!r}")
            return match
        if isinstance(node, dict) and node.get("type") not in (*_NAMED, "array", "map"):
            node = node["type"]
            continue
        return node


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    return str(node["type"])


def _label(node: Any) -> str:
    if isinstance(node, list):
        return "[" + ", ".join(_label(b) for b in node) + "]"
    if isinstance(node, dict):
        if node.get("type") in _NAMED:
            return f"{node['type']} {node['name']}"
        if node.get("type") == "array":
            return f"array<{_label(node['items'])}>"
        if node.get("type") == "map":
            return f"map<{_label(node['values'])}>"
        return _label(node.get("type"))
    return str(node)


class _Resolver:
    """Avro's schema-resolution rules, collecting (kind, path, reason) instead of failing."""

    def __init__(self, writer: Any, reader: Any) -> None:
        self.wnames = _names(writer)
        self.rnames = _names(reader)
        self.issues: list[tuple[str, str, str]] = []
        self.seen: set[tuple[str, str, str]] = set()

    def fail(self, kind: str, path: str, reason: str) -> None:
        self.issues.append((kind, path, reason))

    def matches(self, w: Any, r: Any) -> bool:
        """Whether a writer (non-union) value can be read by reader branch r at all."""
        w, r = _deref(w, self.wnames), _deref(r, self.rnames)
        wk, rk = _kind(w), _kind(r)
        if wk in _NAMED or rk in _NAMED:
            if wk != rk:
                return False
            return bool(_same_name(w, r))
        return wk == rk or (wk, rk) in _PROMOTIONS

    def resolve(self, w: Any, r: Any, path: str) -> None:
        w, r = _deref(w, self.wnames), _deref(r, self.rnames)
        wk, rk = _kind(w), _kind(r)
        if wk == "union":
            for branch in w:
                if rk == "union" and not any(self.matches(branch, rb) for rb in r):
                    self.fail(
                        "type",
                        path,
                        f"writer union branch {_label(branch)} has no match in the reader "
                        f"union {_label(r)}",
                    )
                else:
                    self.resolve(branch, r, path)
            return
        if rk == "union":
            branch = next((rb for rb in r if self.matches(w, rb)), None)
            if branch is None:
                self.fail(
                    "type",
                    path,
                    f"type changed from {_label(w)} to {_label(r)}: no union branch reads it",
                )
            else:
                self.resolve(w, branch, path)
            return
        if wk in _NAMED or rk in _NAMED:
            self.resolve_named(w, r, path)
        elif wk == "array" and rk == "array":
            self.resolve(w["items"], r["items"], f"{path}[]")
        elif wk == "map" and rk == "map":
            self.resolve(w["values"], r["values"], f"{path}{{}}")
        elif wk != rk and (wk, rk) not in _PROMOTIONS:
            self.fail(
                "type",
                path,
                f"type changed from {_label(w)} to {_label(r)} (not a legal Avro promotion)",
            )

    def resolve_named(self, w: Any, r: Any, path: str) -> None:
        wk, rk = _kind(w), _kind(r)
        if wk != rk:
            self.fail("type", path, f"type changed from {_label(w)} to {_label(r)}")
            return
        if not _same_name(w, r):
            self.fail("type", path, f"{wk} renamed from {w['name']} to {r['name']} (no alias)")
            return
        key = (path, json.dumps(w, sort_keys=True), json.dumps(r, sort_keys=True))
        if key in self.seen:
            return
        self.seen.add(key)
        if wk == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                self.fail(
                    "enum",
                    path,
                    f"enum {r['name']} lost symbol(s) {', '.join(missing)} and has no default "
                    "symbol: old data using them cannot be read",
                )
        elif wk == "fixed":
            if w.get("size") != r.get("size"):
                self.fail("type", path, f"fixed size changed from {w['size']} to {r['size']}")
        else:
            self.resolve_record(w, r, path)

    def resolve_record(self, w: Any, r: Any, path: str) -> None:
        wfields = {f["name"]: f for f in w["fields"]}
        for rf in r["fields"]:
            sub = f"{path}.{rf['name']}" if path else rf["name"]
            candidates = [rf["name"], *rf.get("aliases", [])]
            wf = next((wfields[n] for n in candidates if n in wfields), None)
            if wf is not None:
                self.resolve(wf["type"], rf["type"], sub)
            elif "default" not in rf:
                self.fail(
                    "added",
                    sub,
                    "field added without a default: data written before it has no value for it",
                )


def _same_name(w: Mapping[str, Any], r: Mapping[str, Any]) -> bool:
    wname = str(w["name"]).rsplit(".", 1)[-1]
    aliases = {str(a).rsplit(".", 1)[-1] for a in r.get("aliases", [])}
    return wname == str(r["name"]).rsplit(".", 1)[-1] or wname in aliases


def resolution_issues(writer: Any, reader: Any, name: str) -> list[IncompatibleSchema]:
    """Problems that stop `reader` from reading data written with `writer` (Avro rules).

    Each issue names the field as "<name>.<dotted path>" and says why.
    """
    resolver = _Resolver(writer, reader)
    resolver.resolve(writer, reader, "")
    return [IncompatibleSchema(_join(name, path), reason) for _, path, reason in resolver.issues]


def removed_field_issues(old: Any, new: Any, name: str, label: str) -> list[IncompatibleSchema]:
    """Fields of `old` (version `label`) without a default that `new` no longer has.

    Removing a field is fine for new readers, but readers built on the old version (and
    anyone decoding our bytes with its `.avsc`) still require it: only fields that had a
    default may be dropped.
    """
    resolver = _Resolver(new, old)  # old as reader of new data
    resolver.resolve(new, old, "")
    return [
        IncompatibleSchema(
            _join(name, path),
            f"field removed but it has no default in {label}: readers of {label} still "
            "require it (give it a default in a released version first, or move to a new topic)",
        )
        for kind, path, _ in resolver.issues
        if kind == "added"
    ]


def _join(name: str, path: str) -> str:
    return f"{name}.{path}" if path else name
