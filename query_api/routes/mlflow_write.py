"""MLflow-compatible experiment and run routes (writes, and the experiment reads) under
/api/2.0/mlflow and /ajax-api/2.0/mlflow. Writes become events (see `mlflow_writes`); reads
wait for this process's own writes of what they read (read-your-writes for the `mlflow`
client, which cannot carry a consistency token).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from query_api import mlflow_requests as rq
from query_api import mlflow_shapes as shapes
from query_api import mlflow_writes as mw
from query_api import paging
from query_api.errors import BadRequest, ExperimentNotFound, RunNotFound
from query_api.responses import SafeJSONResponse
from query_api.search.parser import ends_in_escape
from query_api.services import Services, services
from query_api.writer import experiment_name_key, run_key

Svc = Annotated[Services, Depends(services)]
OptStr = Annotated[Optional[str], Query(max_length=4_096)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "INVALID_PARAMETER_VALUE / RESOURCE_ALREADY_EXISTS"},
    404: {"description": "RESOURCE_DOES_NOT_EXIST"},
}


def _empty() -> Response:
    return SafeJSONResponse({})


def _search_experiments(svc: Services, req: rq.SearchExperiments) -> Response:
    if not 1 <= req.max_results <= 50_000:
        raise BadRequest(f"Invalid value {req.max_results} for parameter 'max_results' supplied")
    name_like = _name_filter(req.filter)
    fp = paging.fingerprint("mlflow-experiments", req.view_type, req.filter)
    offset = paging.offset_of(req.page_token, fp)
    rows = svc.experiments.search(
        view=req.view_type, name_like=name_like, limit=req.max_results + 1, offset=offset
    )
    body: dict[str, Any] = {}
    if rows:
        body["experiments"] = [shapes.experiment(e) for e in rows[: req.max_results]]
    if len(rows) > req.max_results:
        body["next_page_token"] = paging.encode(fp, offset=offset + req.max_results)
    return SafeJSONResponse(body)


def _name_filter(text: str) -> str | None:
    """`name = 'x'` / `name LIKE 'x%'` (MLflow's common experiment filters) as a LIKE pattern."""
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(
        r"(?:attribute\.|attributes\.)?name\s*(=|LIKE|ILIKE)\s*(['\"])(.*)\2", text, re.I | re.S
    )
    if m is None:
        raise BadRequest(
            f"Unsupported experiment filter {text!r}: only name = '...' / name LIKE '...'"
        )
    op, value = m.group(1).upper(), m.group(3)
    if op == "=":
        return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if ends_in_escape(value):
        raise BadRequest(f"Invalid experiment filter {text!r}: the pattern ends with a backslash")
    return value


def build_router(prefix: str) -> APIRouter:
    r = APIRouter(prefix=prefix, tags=["mlflow"], responses=_ERRORS)

    # -- experiments ----------------------------------------------------------------------
    @r.post("/experiments/create", summary="Create an experiment", response_model=None)
    async def create_experiment(svc: Svc, req: rq.CreateExperiment) -> Response:
        return SafeJSONResponse({"experiment_id": await mw.create_experiment(svc, req)})

    @r.get("/experiments/get", summary="Get an experiment by id", response_model=None)
    def get_experiment(svc: Svc, experiment_id: OptStr = None) -> Response:
        if not experiment_id:
            raise BadRequest("Missing value for required parameter 'experiment_id'")
        exp = mw.read_experiment(svc, experiment_id)
        return SafeJSONResponse({"experiment": shapes.experiment(exp)})

    @r.get("/experiments/get-by-name", summary="Get an experiment by name", response_model=None)
    def get_by_name(svc: Svc, experiment_name: OptStr = None) -> Response:
        if not experiment_name:
            raise BadRequest("Missing value for required parameter 'experiment_name'")
        svc.wait_for([experiment_name_key(svc.write_project, experiment_name)])
        exp = svc.experiments.by_name(experiment_name)
        if exp is None:
            raise ExperimentNotFound(experiment_name)
        return SafeJSONResponse({"experiment": shapes.experiment(exp)})

    @r.post("/experiments/search", summary="Search experiments", response_model=None)
    def search_experiments(svc: Svc, req: rq.SearchExperiments) -> Response:
        return _search_experiments(svc, req)

    @r.get("/experiments/search", summary="Search experiments (GET)", response_model=None)
    def search_experiments_get(
        svc: Svc,
        max_results: int = 1000,
        page_token: OptStr = None,
        filter: Annotated[str, Query(max_length=20_000)] = "",  # noqa: A002 - MLflow's name
        view_type: str = "ACTIVE_ONLY",
    ) -> Response:
        req = rq.SearchExperiments(
            max_results=max_results, page_token=page_token, filter=filter, view_type=view_type
        )
        return _search_experiments(svc, req)

    @r.post("/experiments/update", summary="Rename an experiment", response_model=None)
    async def update_experiment(svc: Svc, req: rq.UpdateExperiment) -> Response:
        await mw.update_experiment(svc, req)
        return _empty()

    @r.post("/experiments/delete", summary="Delete an experiment (soft)", response_model=None)
    async def delete_experiment(svc: Svc, req: rq.ExperimentRef) -> Response:
        await mw.delete_experiment(svc, req, restore=False)
        return _empty()

    @r.post("/experiments/restore", summary="Restore a deleted experiment", response_model=None)
    async def restore_experiment(svc: Svc, req: rq.ExperimentRef) -> Response:
        await mw.delete_experiment(svc, req, restore=True)
        return _empty()

    @r.post("/experiments/set-experiment-tag", summary="Set an experiment tag", response_model=None)
    async def set_experiment_tag(svc: Svc, req: rq.ExperimentTag) -> Response:
        await mw.set_experiment_tag(svc, req, delete=False)
        return _empty()

    @r.post(
        "/experiments/delete-experiment-tag",
        summary="Delete an experiment tag",
        response_model=None,
    )
    async def delete_experiment_tag(svc: Svc, req: rq.ExperimentTag) -> Response:
        await mw.set_experiment_tag(svc, req, delete=True)
        return _empty()

    # -- runs -----------------------------------------------------------------------------
    @r.post("/runs/create", summary="Create a run", response_model=None)
    async def create_run(svc: Svc, req: rq.CreateRun) -> Response:
        run = await mw.create_run(svc, req, svc.shared.runs)
        return SafeJSONResponse({"run": shapes.run(run)})

    @r.post("/runs/update", summary="Update a run's status, end time or name", response_model=None)
    async def update_run(svc: Svc, req: rq.UpdateRun) -> Response:
        changed = await mw.update_run(svc, req, svc.shared.runs)
        rid = req.id

        def info() -> dict[str, Any]:
            # a run created here: as created, with the changes written here since (no read);
            # another run: its state before this update, the update's own fields overlaid
            entry = svc.shared.runs.get(svc.write_project, rid)
            if entry is not None and entry.created is not None:
                return shapes.run_info({**entry.created, **changed})
            try:
                run = svc.runs.info(rid)
            except RunNotFound:
                svc.wait_for([run_key(rid)])
                run = svc.runs.info(rid)
            return shapes.run_info({**run, **changed})

        return SafeJSONResponse({"run_info": await run_in_threadpool(info)})

    @r.post("/runs/delete", summary="Delete a run (soft)", response_model=None)
    async def delete_run(svc: Svc, req: rq.RunRef) -> Response:
        await mw.delete_run(svc, req, svc.shared.runs, restore=False)
        return _empty()

    @r.post("/runs/restore", summary="Restore a deleted run", response_model=None)
    async def restore_run(svc: Svc, req: rq.RunRef) -> Response:
        await mw.delete_run(svc, req, svc.shared.runs, restore=True)
        return _empty()

    @r.post("/runs/log-metric", summary="Log one metric point", response_model=None)
    async def log_metric(svc: Svc, req: rq.LogMetric) -> Response:
        batch = rq.LogBatch(
            run_id=req.id,
            metrics=[
                rq.MetricIn(key=req.key, value=req.value, timestamp=req.timestamp, step=req.step)
            ],
        )
        await mw.log_batch(svc, batch, svc.shared.runs)
        return _empty()

    @r.post("/runs/log-parameter", summary="Log one param (immutable)", response_model=None)
    async def log_param(svc: Svc, req: rq.LogParam) -> Response:
        batch = rq.LogBatch(run_id=req.id, params=[rq.KeyValue(key=req.key, value=req.value)])
        await mw.log_batch(svc, batch, svc.shared.runs)
        return _empty()

    @r.post("/runs/set-tag", summary="Set a run tag", response_model=None)
    async def set_tag(svc: Svc, req: rq.SetTag) -> Response:
        batch = rq.LogBatch(run_id=req.id, tags=[rq.KeyValue(key=req.key, value=req.value)])
        await mw.log_batch(svc, batch, svc.shared.runs)
        return _empty()

    @r.post("/runs/delete-tag", summary="Delete a run tag", response_model=None)
    async def delete_tag(svc: Svc, req: rq.DeleteTag) -> Response:
        await mw.delete_tag(svc, req, svc.shared.runs)
        return _empty()

    @r.post(
        "/runs/log-batch",
        summary="Log metrics (<= 1000), params (<= 100) and tags (<= 100) at once",
        response_model=None,
    )
    async def log_batch(svc: Svc, req: rq.LogBatch) -> Response:
        await mw.log_batch(svc, req, svc.shared.runs)
        return _empty()

    @r.post("/runs/log-inputs", summary="Link dataset inputs to a run", response_model=None)
    async def log_inputs(svc: Svc, req: rq.LogInputs) -> Response:
        await mw.log_inputs(svc, req, svc.shared.runs)
        return _empty()

    return r


routers = [build_router("/api/2.0/mlflow"), build_router("/ajax-api/2.0/mlflow")]
