"""Shared pieces of the reliability tests of the query API: two projects with a token each,
an in-process app over the session chDB and S3, and the error-body check."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from query_api.app import create_app
from query_api.artifacts import S3Settings
from query_api.auth import issue_token
from query_api.settings import Settings
from tests.query_api.readmodels import ReadModels
from tests.query_api.test_api_auth import MemoryLog
from tests.query_api.testclient import TestClient

MLFLOW = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@dataclass
class Projects:
    """Project A (`ea`/`ra`) and project B (`eb`/`rb`) in one database, a token for each."""

    db: str
    a: str
    b: str
    token_a: str
    token_b: str
    models_a: ReadModels
    models_b: ReadModels

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def ha(self) -> dict[str, str]:
        return self.auth(self.token_a)

    @property
    def hb(self) -> dict[str, str]:
        return self.auth(self.token_b)


def seed_projects(chdb_client: Any, db: str) -> Projects:
    """Migrated `db` with two projects of unique names (their S3 prefixes are fresh too)."""
    tag = uuid.uuid4().hex[:8]
    pa, pb = f"pa-{tag}", f"pb-{tag}"
    base = ReadModels(chdb_client, db).migrate()
    a = ReadModels(chdb_client, base.db, project=pa)
    b = ReadModels(chdb_client, base.db, project=pb)
    for m, side in ((a, "a"), (b, "b")):
        m.experiment(f"e{side}", f"exp-{side}")
        m.run(f"r{side}", f"e{side}", name=f"run-{side}", status="FINISHED")
        m.params(f"r{side}", {"lr": "0.1", "secret_of": side}, experiment_id=f"e{side}")
        m.tags(f"r{side}", {"team": side}, experiment_id=f"e{side}")
        m.points(f"r{side}", "acc", [0.5, 0.9], experiment_id=f"e{side}")
        m.artifact(f"r{side}", "model.txt", experiment_id=f"e{side}")
    return Projects(
        db,
        pa,
        pb,
        issue_token(chdb_client, db, pa).token,
        issue_token(chdb_client, db, pb).token,
        a,
        b,
    )


def s3_settings(connection: Any) -> S3Settings:
    return S3Settings(
        connection.s3_endpoint,
        connection.s3_access_key,
        connection.s3_secret_key,
        connection.s3_bucket,
    )


@contextlib.contextmanager
def secured_client(
    chdb_client: Any,
    projects: Projects,
    connection: Any | None = None,
    *,
    s3: S3Settings | None = None,
    **settings: Any,
) -> Iterator[tuple[TestClient, MemoryLog]]:
    """An in-process app requiring tokens; writes go to a MemoryLog, artifacts to S3."""
    log = MemoryLog()
    if s3 is None and connection is not None:
        s3 = s3_settings(connection)
    app = create_app(
        Settings(database=projects.db, consistency_timeout_s=0.5, **settings),
        lambda: chdb_client,
        event_log=log,
        s3=s3,
        require_tokens=True,
    )
    app.state.shared.auth.ttl_s = 0.0
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, log


def assert_error(response: Any, *statuses: int) -> dict[str, Any]:
    """The response is one of `statuses` with a `{error_code, message}` JSON body."""
    assert response.status_code in statuses, (
        f"{response.status_code} not in {statuses}: {response.text[:300]}"
    )
    body = response.json()
    assert isinstance(body, dict), body
    assert {"error_code", "message"} <= set(body), body
    assert isinstance(body["error_code"], str)
    assert isinstance(body["message"], str)
    return body


def bucket_objects(minio_client: Any, bucket: str, prefix: str = "") -> set[str]:
    return {o.object_name for o in minio_client.list_objects(bucket, prefix, recursive=True)}
