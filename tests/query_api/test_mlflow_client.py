"""The REAL `mlflow` client (own venv, subprocess) against a live API + projection worker."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from schemas import uuid7_time_ms
from tests.query_api.live import live_api, run_client

pytestmark = pytest.mark.stack

CLIENT_SCRIPT = r"""
import json, os, sys, tempfile
import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

mlflow.set_tracking_uri(sys.argv[1])
out = {}
exp_id = mlflow.set_experiment("rs-client").experiment_id
work = tempfile.mkdtemp()
with mlflow.start_run(run_name="first") as run:
    rid = run.info.run_id
    out["artifact_uri"] = run.info.artifact_uri
    mlflow.log_param("lr", 0.01)
    mlflow.log_params({"bs": 64, "opt": "adam"})
    mlflow.log_metric("loss", 0.5, step=0)
    mlflow.log_metric("loss", 0.25, step=1)
    mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=1)
    mlflow.log_metric("weird", float("nan"), step=0)
    mlflow.set_tag("phase", "demo")
    path = os.path.join(work, "notes.txt")
    with open(path, "w") as fh:
        fh.write("hello runstream")
    mlflow.log_artifact(path)
    mlflow.log_artifact(path, artifact_path="sub")
client = MlflowClient()
r = client.get_run(rid)
out["status"] = r.info.status
out["run_name"] = r.info.run_name
out["params"] = r.data.params
out["metrics"] = {k: (None if v != v else v) for k, v in r.data.metrics.items()}
out["tags"] = {k: v for k, v in r.data.tags.items() if k in ("phase", "mlflow.runName")}
out["history"] = [[m.step, m.value] for m in client.get_metric_history(rid, "loss")]
out["search"] = [x.info.run_id for x in mlflow.search_runs([exp_id], output_format="list")]
flt = "metrics.loss < 0.3 and params.opt = 'adam'"
out["search_filter"] = [x.info.run_id for x in client.search_runs([exp_id], flt)]
out["search_none"] = [x.info.run_id for x in client.search_runs([exp_id], "metrics.loss > 1")]
out["artifacts"] = sorted((f.path, f.is_dir) for f in client.list_artifacts(rid))
out["sub"] = sorted(f.path for f in client.list_artifacts(rid, "sub"))
got = client.download_artifacts(rid, "sub/notes.txt", tempfile.mkdtemp())
out["artifact_text"] = open(got).read()
out["run_id"] = rid
out["experiment_id"] = exp_id

def code(fn):
    try:
        fn()
    except MlflowException as exc:
        return exc.error_code
    return "OK"

out["dup_experiment"] = code(lambda: client.create_experiment("rs-client"))
out["missing_run"] = code(lambda: client.get_run("0" * 32))
out["param_change"] = code(lambda: client.log_param(rid, "lr", "0.02"))
out["param_same"] = code(lambda: client.log_param(rid, "lr", "0.01"))
other = client.create_experiment("rs-client-other", tags={"team": "a"})
client.set_experiment_tag(other, "stage", "x")
client.rename_experiment(other, "rs-client-renamed")
e = client.get_experiment(other)
out["renamed"] = [e.name, e.tags.get("team"), e.tags.get("stage")]
again = client.create_experiment("rs-client-other")
out["recreated"] = [again != other, client.get_experiment(again).name]
client.delete_experiment(other)
out["deleted_stage"] = client.get_experiment(other).lifecycle_stage
client.restore_experiment(other)
run2 = client.create_run(other, run_name="second")
out["run2_id"] = run2.info.run_id
out["unnamed"] = [client.create_run(other).info.run_name for _ in range(2)]
client.log_batch(run2.info.run_id, metrics=[], params=[], tags=[])
client.delete_run(run2.info.run_id)
out["run2_stage"] = client.get_run(run2.info.run_id).info.lifecycle_stage
client.restore_run(run2.info.run_id)
client.set_tag(run2.info.run_id, "gone", "1")
client.delete_tag(run2.info.run_id, "gone")
out["run2_tags"] = sorted(k for k in client.get_run(run2.info.run_id).data.tags if k == "gone")
out["delete_missing_tag"] = code(lambda: client.delete_tag(run2.info.run_id, "never-set"))
out["delete_deleted_tag"] = code(lambda: client.delete_tag(run2.info.run_id, "gone"))
client.set_terminated(run2.info.run_id, "FAILED")
out["run2_status"] = client.get_run(run2.info.run_id).info.status
client.set_tag(run2.info.run_id, "mlflow.runName", "renamed-by-tag")
out["tag_rename"] = client.get_run(run2.info.run_id).info.run_name
client.update_run(run2.info.run_id, name="renamed-by-update")
r2 = client.get_run(run2.info.run_id)
out["update_rename"] = [r2.info.run_name, r2.data.tags.get("mlflow.runName")]
out["blank_name"] = client.create_run(other, run_name="  ").info.run_name
names = [x.name for x in client.search_experiments(filter_string="name LIKE 'rs-client%'")]
out["experiments"] = sorted(names)

if os.environ.get("RS_LOG_MODEL", "1") == "1":
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run(experiment_id=exp_id) as run3:
        info = mlflow.pyfunc.log_model(name="echo", python_model=Echo())
    out["model_uri"] = info.model_uri
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    out["model_loaded"] = type(loaded).__name__
print("RESULT " + json.dumps(out))
"""


def _result(stdout: str) -> dict[str, Any]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


def test_real_mlflow_client_round_trip(
    connection: Any,
    chdb_client: Any,
    ch_database: str,
    kafka_topic: str,
    tmp_path: Path,
    mlflow_py: Path,
    chdb_writers: tuple[Any, ...],
) -> None:
    with live_api(connection, chdb_client, ch_database, kafka_topic, chdb_writers) as live:
        out = _result(run_client(mlflow_py, CLIENT_SCRIPT, live.url, tmp_path))
    rid, eid = out["run_id"], out["experiment_id"]
    assert out["artifact_uri"] == f"mlflow-artifacts:/{eid}/{rid}/artifacts"
    assert out["status"] == "FINISHED"
    # MLflow's spelling (32 hex digits), time-ordered (UUIDv7): the later run sorts after
    for run_id in (rid, out["run2_id"]):
        assert re.fullmatch("[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}", run_id), run_id
        assert abs(uuid7_time_ms(run_id) - time.time() * 1000) < 600_000
    assert rid < out["run2_id"]
    a, b = out["unnamed"]  # default names: not the ids' heads (one per ~65 s of time)
    assert a != b
    assert a.startswith("run-")
    assert out["run_name"] == "first"
    assert out["params"] == {"lr": "0.01", "bs": "64", "opt": "adam"}
    assert out["metrics"] == {"loss": 0.25, "acc": 0.9, "f1": 0.8, "weird": None}
    assert out["tags"] == {"phase": "demo", "mlflow.runName": "first"}
    assert out["history"] == [[0, 0.5], [1, 0.25]]
    assert rid in out["search"]
    assert out["search_filter"] == [rid]
    assert out["search_none"] == []
    assert out["artifacts"] == [["notes.txt", False], ["sub", True]]
    assert out["sub"] == ["sub/notes.txt"]
    assert out["artifact_text"] == "hello runstream"
    assert out["dup_experiment"] == "RESOURCE_ALREADY_EXISTS"
    assert out["missing_run"] == "RESOURCE_DOES_NOT_EXIST"
    assert out["param_change"] == "INVALID_PARAMETER_VALUE"
    assert out["param_same"] == "OK"
    assert out["renamed"] == ["rs-client-renamed", "a", "x"]
    assert out["deleted_stage"] == "deleted"
    assert out["run2_stage"] == "deleted"
    assert out["run2_tags"] == []
    assert out["delete_missing_tag"] == "RESOURCE_DOES_NOT_EXIST"  # as MLflow answers
    assert out["delete_deleted_tag"] == "RESOURCE_DOES_NOT_EXIST"
    assert out["run2_status"] == "FAILED"
    # a run's name and its mlflow.runName tag stay equal, whichever is written
    assert out["tag_rename"] == "renamed-by-tag"
    assert out["update_rename"] == ["renamed-by-update", "renamed-by-update"]
    assert out["blank_name"].startswith("run-")
    assert out["recreated"] == [True, "rs-client-other"]
    assert out["experiments"] == ["rs-client", "rs-client-other", "rs-client-renamed"]
    assert out["model_uri"].startswith("models:/")
    assert out["model_loaded"] == "PyFuncModel"
