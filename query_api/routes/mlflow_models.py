"""MLflow 3 logged models: the routes `mlflow.<flavor>.log_model` calls, kept minimal.

Create / get / finalize / delete / search (filters `name = '…'`, `source_run_id = '…'`),
tags, params, `runs/outputs` (a `DatasetLinked` OUTPUT MODEL event) and `runs/log-model`
(accepted, no effect). There is no read model for logged models yet: each is a JSON document
in S3 (`DocumentStore`), by id and in its experiment's index; its artifacts live under
`mlflow-artifacts:/<experiment_id>/models/<model_id>/artifacts` (see `mlflow_artifacts`).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from query_api import mlflow_writes as mw
from query_api.artifacts import DocumentStore
from query_api.errors import BadRequest, NotFound, WriteUnavailable
from query_api.eventlog import now_ms
from query_api.mlflow_requests import KeyValue, RunRef
from query_api.responses import SafeJSONResponse
from query_api.services import Services, services
from schemas import DatasetLinked, LineageDirection, LineageKind

Svc = Annotated[Services, Depends(services)]
BY_ID = "logged-models"
_CLAUSE = re.compile(r"\s*(name|source_run_id)\s*=\s*'((?:[^']|'')*)'\s*", re.I)


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateModel(_Req):
    experiment_id: str = Field(default="", max_length=256)
    name: Optional[str] = Field(default=None, max_length=1_000)
    model_type: Optional[str] = Field(default=None, max_length=1_000)
    source_run_id: Optional[str] = Field(default=None, max_length=256)
    params: list[KeyValue] = Field(default_factory=list, max_length=1_000)
    tags: list[KeyValue] = Field(default_factory=list, max_length=1_000)


class Finalize(_Req):
    status: str = "LOGGED_MODEL_READY"


class Tags(_Req):
    tags: list[KeyValue] = Field(default_factory=list, max_length=1_000)


class Params(_Req):
    params: list[KeyValue] = Field(default_factory=list, max_length=1_000)


class SearchModels(_Req):
    experiment_ids: list[str] = Field(default_factory=list, max_length=100)
    filter: str = Field(default="", max_length=4_096)
    max_results: int = Field(default=100, ge=1, le=10_000)
    page_token: Optional[str] = Field(default=None, max_length=4_096)


class ModelOutput(_Req):
    model_id: str = Field(max_length=256)
    step: int = 0


class LogOutputs(RunRef):
    models: list[ModelOutput] = Field(default_factory=list, max_length=1_000)


def _docs(svc: Services) -> DocumentStore:
    if svc.shared.blobs is None:
        raise WriteUnavailable("logged models need S3: the API was started without S3 settings")
    return DocumentStore(svc.shared.blobs)


def _index(experiment_id: str) -> str:
    return f"logged-models-of/{experiment_id}"


def _model(svc: Services, model_id: str) -> dict[str, Any]:
    doc = _docs(svc).get(svc.write_project, BY_ID, model_id)
    if doc is None:
        raise NotFound(f"Logged model with ID '{model_id}' not found.")
    return doc


def _save(svc: Services, doc: dict[str, Any]) -> None:
    info = doc["info"]
    info["last_updated_timestamp_ms"] = now_ms()
    docs = _docs(svc)
    docs.put(svc.write_project, BY_ID, info["model_id"], doc)
    docs.put(svc.write_project, _index(info["experiment_id"]), info["model_id"], doc)


def _merge(items: list[dict[str, str]], new: list[KeyValue]) -> list[dict[str, str]]:
    merged = {i["key"]: i["value"] for i in items}
    merged.update({kv.key: kv.value or "" for kv in new})
    return [{"key": k, "value": v} for k, v in sorted(merged.items())]


def _filter(text: str) -> dict[str, str]:
    conds: dict[str, str] = {}
    for part in re.split(r"\s+AND\s+", text.strip(), flags=re.I) if text.strip() else []:
        m = _CLAUSE.fullmatch(part)
        if m is None:
            raise BadRequest(f"Unsupported logged-model filter {part!r}")
        conds[m.group(1).lower()] = m.group(2).replace("''", "'")
    return conds


def build_router(prefix: str) -> APIRouter:
    r = APIRouter(prefix=prefix, tags=["mlflow-logged-models"])

    @r.post("/logged-models", summary="Create a logged model (MLflow 3)", response_model=None)
    async def create(svc: Svc, req: CreateModel) -> Response:
        eid = mw.resolve_experiment_id(svc, req.experiment_id)
        await run_in_threadpool(mw.checked_experiment, svc, eid)
        model_id = f"m-{uuid.uuid4().hex}"
        now = now_ms()
        info: dict[str, Any] = {
            "model_id": model_id,
            "experiment_id": eid,
            "name": req.name or f"model-{model_id[2:10]}",
            "creation_timestamp_ms": now,
            "last_updated_timestamp_ms": now,
            "artifact_uri": f"mlflow-artifacts:/{eid}/models/{model_id}/artifacts",
            "status": "LOGGED_MODEL_PENDING",
            "tags": _merge([], req.tags),
        }
        if req.model_type:
            info["model_type"] = req.model_type
        if req.source_run_id:
            info["source_run_id"] = req.source_run_id
        doc = {"info": info, "data": {"params": _merge([], req.params)}}
        await run_in_threadpool(_save, svc, doc)
        return SafeJSONResponse({"model": doc})

    @r.post("/logged-models/search", summary="Search logged models", response_model=None)
    async def search(svc: Svc, req: SearchModels) -> Response:
        conds = _filter(req.filter)
        docs = _docs(svc)
        found: list[dict[str, Any]] = []
        for e in req.experiment_ids:
            eid = mw.resolve_experiment_id(svc, e)
            found += await run_in_threadpool(docs.list, svc.write_project, _index(eid))
        found = [
            d
            for d in found
            if all(d["info"].get(k) == v for k, v in conds.items())
            and d["info"].get("status") != "DELETED"
        ]
        found.sort(key=lambda d: -int(d["info"]["creation_timestamp_ms"]))
        return SafeJSONResponse({"models": found[: req.max_results]} if found else {})

    @r.get("/logged-models/{model_id}", summary="Get a logged model", response_model=None)
    async def get(svc: Svc, model_id: str) -> Response:
        return SafeJSONResponse({"model": await run_in_threadpool(_model, svc, model_id)})

    @r.patch("/logged-models/{model_id}", summary="Finalize a logged model", response_model=None)
    async def finalize(svc: Svc, model_id: str, req: Finalize) -> Response:
        doc = await run_in_threadpool(_model, svc, model_id)
        doc["info"]["status"] = req.status
        await run_in_threadpool(_save, svc, doc)
        return SafeJSONResponse({"model": doc})

    @r.delete("/logged-models/{model_id}", summary="Delete a logged model", response_model=None)
    async def delete(svc: Svc, model_id: str) -> Response:
        doc = await run_in_threadpool(_model, svc, model_id)
        docs = _docs(svc)
        await run_in_threadpool(docs.delete, svc.write_project, BY_ID, model_id)
        index = _index(doc["info"]["experiment_id"])
        await run_in_threadpool(docs.delete, svc.write_project, index, model_id)
        return SafeJSONResponse({})

    @r.patch("/logged-models/{model_id}/tags", summary="Set logged-model tags", response_model=None)
    async def set_tags(svc: Svc, model_id: str, req: Tags) -> Response:
        doc = await run_in_threadpool(_model, svc, model_id)
        doc["info"]["tags"] = _merge(doc["info"].get("tags", []), req.tags)
        await run_in_threadpool(_save, svc, doc)
        return SafeJSONResponse({})

    @r.delete(
        "/logged-models/{model_id}/tags/{tag_key}",
        summary="Delete a logged-model tag",
        response_model=None,
    )
    async def delete_tag(svc: Svc, model_id: str, tag_key: str) -> Response:
        doc = await run_in_threadpool(_model, svc, model_id)
        doc["info"]["tags"] = [t for t in doc["info"].get("tags", []) if t["key"] != tag_key]
        await run_in_threadpool(_save, svc, doc)
        return SafeJSONResponse({})

    @r.post(
        "/logged-models/{model_id}/params",
        summary="Log logged-model params",
        response_model=None,
    )
    async def log_params(svc: Svc, model_id: str, req: Params) -> Response:
        doc = await run_in_threadpool(_model, svc, model_id)
        doc["data"]["params"] = _merge(doc["data"].get("params", []), req.params)
        await run_in_threadpool(_save, svc, doc)
        return SafeJSONResponse({})

    @r.post("/runs/outputs", summary="Link output models to a run", response_model=None)
    async def log_outputs(svc: Svc, req: LogOutputs) -> Response:
        rid = req.id
        eid = await mw.run_experiment(svc, rid, svc.shared.runs)
        events = [
            DatasetLinked(
                envelope=svc.writer.envelope(eid, rid),
                direction=LineageDirection.OUTPUT,
                kind=LineageKind.MODEL,
                name=m.model_id,
                source_uri=f"models:/{m.model_id}",
                metadata={"step": str(m.step)},
            )
            for m in req.models
        ]
        await svc.writer.emit(events)
        return SafeJSONResponse({})

    @r.post("/runs/log-model", summary="Record a logged MLmodel (accepted)", response_model=None)
    async def log_model(svc: Svc, req: RunRef) -> Response:
        await mw.run_experiment(svc, req.id, svc.shared.runs)
        return SafeJSONResponse({})

    return r


routers = [build_router("/api/2.0/mlflow"), build_router("/ajax-api/2.0/mlflow")]
