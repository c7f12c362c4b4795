"""Runstream read-model rows in MLflow's REST shapes (protobuf JSON, snake_case).

Rules: unset fields and empty repeated fields are omitted, as MLflow's protobuf JSON does;
a metric of a non-default split appears under the key `key@split` (the same spelling the
search language uses), the default split under the plain key; `data.metrics` holds the
latest value per key.
"""

from __future__ import annotations

from typing import Any

MLFLOW_STATUSES = frozenset({"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"})


def metric_name(key: str, split: str) -> str:
    return key if not split else f"{key}@{split}"


def artifact_uri(experiment_id: str, run_id: str) -> str:
    """Proxied artifacts: the `mlflow` client uploads them through this API."""
    return f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"


def experiment(exp: dict[str, Any]) -> dict[str, Any]:
    """A Runstream experiment as an MLflow `Experiment`."""
    out: dict[str, Any] = {
        "experiment_id": exp["experiment_id"],
        "name": exp["name"],
        "artifact_location": f"mlflow-artifacts:/{exp['experiment_id']}",
        "lifecycle_stage": exp["lifecycle_stage"],
        "last_update_time": exp["last_update_time"],
        "creation_time": exp["creation_time"],
    }
    tags = [{"key": k, "value": v} for k, v in sorted(exp.get("tags", {}).items())]
    if tags:
        out["tags"] = tags
    return out


def run_info(run: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": run["run_id"],
        "run_uuid": run["run_id"],
        "run_name": run["name"],
        "experiment_id": run["experiment_id"],
        "user_id": run.get("tags", {}).get("mlflow.user", ""),
        "status": run["status"] if run["status"] in MLFLOW_STATUSES else "RUNNING",
        "start_time": run["start_time"],
        "artifact_uri": artifact_uri(run["experiment_id"], run["run_id"]),
        "lifecycle_stage": run["lifecycle_stage"],
    }
    if run.get("end_time") is not None:
        info["end_time"] = run["end_time"]
    return info


def run(run: dict[str, Any]) -> dict[str, Any]:
    """A Runstream run (with params, tags, metrics summaries) as an MLflow `Run`."""
    data: dict[str, Any] = {}
    metrics = [
        {
            "key": metric_name(m["key"], m["split"]),
            "value": m["last"],
            "timestamp": m["last_timestamp"],
            "step": m["last_step"],
        }
        for m in run.get("metrics", [])
    ]
    params = [{"key": k, "value": v} for k, v in run.get("params", {}).items()]
    tags = [{"key": k, "value": v} for k, v in run.get("tags", {}).items()]
    for name, items in (("metrics", metrics), ("params", params), ("tags", tags)):
        if items:
            data[name] = items
    return {"info": run_info(run), "data": data, "inputs": {}, "outputs": {}}


def history_point(key: str, point: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": key,
        "value": point["value"],
        "timestamp": point["timestamp"],
        "step": point["step"],
    }
