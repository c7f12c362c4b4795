"""Fixtures of the processors tests (the session stack comes from tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from processors.migrate import migrate


@pytest.fixture
def read_db(chdb_client: Any, ch_database: str) -> str:
    """A migrated read-model database of its own."""
    migrate(chdb_client, ch_database)
    return ch_database


@pytest.fixture
def scratch_dbs(chdb_client: Any) -> Iterator[list[str]]:
    """Databases a test creates itself (replay versions, hypothesis examples); dropped after."""
    names: list[str] = []
    yield names
    for name in names:
        for db in (
            name,
            *[
                r[0]
                for r in chdb_client.query(
                    "SELECT name FROM system.databases WHERE name LIKE %(p)s",
                    parameters={"p": name + "_v%"},
                ).result_rows
            ],
        ):
            chdb_client.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def new_db_name(prefix: str = "p") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
