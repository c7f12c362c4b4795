"""Shared helpers for the schema tests: pure logic, no infrastructure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from schemas import Envelope, new_event_id
from schemas.compat import Version, from_avro_json, load_versions


def all_examples() -> Iterator[tuple[str, str, int, dict[str, Any]]]:
    """(version label, event name, index, record) for every frozen example."""
    for version in load_versions():
        for name, values in sorted(version.examples.items()):
            for i, value in enumerate(values):
                yield version.label, name, i, from_avro_json(value, version.schemas[name])


EXAMPLES = list(all_examples())
EXAMPLE_IDS = [f"{label}-{name}-{i}" for label, name, i, _ in EXAMPLES]


def make_envelope(run_id: str | None = "run-1", **overrides: Any) -> Envelope:
    fields: dict[str, Any] = {
        "event_id": new_event_id(),
        "experiment_id": "exp-1",
        "producer_id": "producer-1",
        "seq": 0,
        "occurred_at": 1_767_225_600_000,
        "run_id": run_id,
    }
    fields.update(overrides)
    return Envelope(**fields)


@pytest.fixture
def envelope() -> Envelope:
    return make_envelope()


@pytest.fixture(scope="session")
def versions() -> list[Version]:
    return load_versions()
