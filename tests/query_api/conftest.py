"""Fixtures of the query API tests: a migrated test database and a TestClient over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from query_api.app import create_app
from query_api.settings import Settings
from tests.query_api.live import mlflow_python
from tests.query_api.readmodels import ReadModels
from tests.query_api.testclient import TestClient


@pytest.fixture
def models(chdb_client: Any, ch_database: str) -> ReadModels:
    return ReadModels(chdb_client, ch_database).migrate()


@pytest.fixture
def api(chdb_client: Any, models: ReadModels) -> Iterator[TestClient]:
    app = create_app(Settings(database=models.db), lambda: chdb_client)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def mlflow_py() -> Path:
    """Python of `.runstream/mlflow-venv` with the real `mlflow` client (installed once;
    skips naming what is missing when it cannot be installed)."""
    return mlflow_python()
