"""Key prefixes, MLflow's aliases and the searchable run attributes.

Rule: every spelling MLflow accepts resolves to one canonical (entity, name), so the
compiler and the renderer only ever see canonical keys.
"""

from __future__ import annotations

from typing import Literal

from query_api.errors import FilterSyntaxError
from query_api.search.ast import Entity

AttrKind = Literal["number", "string", "time"]

PREFIXES: dict[str, Entity] = {
    "metric": "metric",
    "metrics": "metric",
    "param": "param",
    "params": "param",
    "parameter": "param",
    "parameters": "param",
    "tag": "tag",
    "tags": "tag",
    "attribute": "attribute",
    "attributes": "attribute",
    "attr": "attribute",
    "run": "attribute",
}

# Searchable run attributes and the kind of literal each takes.
ATTRIBUTES: dict[str, AttrKind] = {
    "run_id": "string",
    "run_name": "string",
    "status": "string",
    "experiment_id": "string",
    "start_time": "time",
    "end_time": "time",
}

# Other spellings of attribute names (MLflow accepts these).
ATTRIBUTE_ALIASES: dict[str, str] = {
    "run_uuid": "run_id",
    "id": "run_id",
    "name": "run_name",
    "runname": "run_name",
    "created": "start_time",
    "start": "start_time",
    "end": "end_time",
}


def resolve_prefix(prefix: str, position: int) -> Entity:
    """`metrics` / `metric` / `params` / `tag` / `attribute` … → the entity."""
    entity = PREFIXES.get(prefix.lower())
    if entity is None:
        raise FilterSyntaxError(
            f"unknown key prefix {prefix!r} (expected metrics., params., tags. or attributes.)",
            position,
        )
    return entity


def resolve_bare(name: str, position: int, *, prefixed: bool = False) -> str:
    """An attribute name (bare like `status`, or after `attributes.`) → its canonical name."""
    lowered = name.lower()
    canonical = ATTRIBUTE_ALIASES.get(lowered, lowered)
    if canonical in ATTRIBUTES:
        return canonical
    known = ", ".join(sorted(ATTRIBUTES))
    if prefixed:
        raise FilterSyntaxError(f"unknown attribute {name!r} (known: {known})", position)
    raise FilterSyntaxError(
        f"unknown key {name!r}: use metrics.<key>, params.<key>, tags.<key> or one of {known}",
        position,
    )
