"""MLflow writes as Runstream events (the logic behind `routes/mlflow_write.py`).

Rules: a write validates first, then reads what it must (does the run / experiment exist in
the caller's project, is a param already set) after waiting for this process's own earlier
writes of it, then produces its events in one all-or-nothing send. Experiment ids are the
SDK's (`uuid5(project, name)`), so the SDK and the MLflow client meet on one experiment;
MLflow's Default experiment "0" maps to the project's experiment named "Default" (created
on first use). Run ids are 32 hex digits, like MLflow's, and time-ordered (a UUIDv7, as
the SDK's): runs created together sit together in the read models' run-keyed tables, so a
batch's part of `run_search` covers a narrow key range and search's FINAL merges little
before the parts are merged (a random id spreads every batch over the whole experiment).
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool

from producers.emit import experiment_id_for
from query_api import mlflow_requests as rq
from query_api.errors import AlreadyExists, BadRequest, ExperimentNotFound, NotFound
from query_api.eventlog import now_ms
from query_api.services import Services
from query_api.writer import (
    RunDirectory,
    RunEntry,
    experiment_key,
    experiment_name_key,
    run_key,
)
from schemas import (
    DatasetLinked,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagsRemoved,
    ExperimentTagsSet,
    InvalidEvent,
    LineageDirection,
    LineageKind,
    MetricsLogged,
    ParamsLogged,
    RunCreated,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStatus,
    RunStatusChanged,
    TagsRemoved,
    TagsSet,
    new_event_id,
    pack_points,
)

DEFAULT_EXPERIMENT = "Default"
#: MLflow's bound on an experiment name (create and rename)
MAX_EXPERIMENT_NAME = 250
#: the tag MLflow keeps equal to a run's name
RUN_NAME_TAG = "mlflow.runName"
_STATUS = {
    "RUNNING": RunStatus.RUNNING,
    "SCHEDULED": RunStatus.RUNNING,
    "FINISHED": RunStatus.FINISHED,
    "FAILED": RunStatus.FAILED,
    "KILLED": RunStatus.KILLED,
}


# -- experiments --------------------------------------------------------------------------
def resolve_experiment_id(svc: Services, experiment_id: str | None) -> str:
    if experiment_id in (None, "", "0"):
        return experiment_id_for(svc.write_project, DEFAULT_EXPERIMENT)
    return str(experiment_id)


def read_experiment(svc: Services, experiment_id: str) -> dict[str, Any]:
    """The experiment (after this process's writes of it are projected); 404 if absent."""
    eid = resolve_experiment_id(svc, experiment_id)
    svc.wait_for([experiment_key(eid)])
    return svc.experiments.get(eid)


def checked_experiment(svc: Services, experiment_id: str) -> dict[str, Any]:
    """`read_experiment` for the check a write starts with, held for a while
    (`writer.CheckedExperiments`: reused until this process writes to the experiment, or
    for `experiment_check_ttl_s`); 404 if absent (not held)."""
    eid = resolve_experiment_id(svc, experiment_id)
    generation = svc.shared.store.generation
    if generation is None:  # the read database's UUID unknown: nothing to key a hold by
        return read_experiment(svc, eid)
    key = (generation, svc.experiments.project, eid)
    marks = svc.shared.marks.of([experiment_key(eid)])
    held = svc.shared.checked_experiments.get(key, marks)
    if held is None:
        held = read_experiment(svc, eid)
        svc.shared.checked_experiments.put(key, marks, held)
    return held


async def create_experiment(svc: Services, req: rq.CreateExperiment) -> str:
    name = req.name.strip()
    if not name:
        raise BadRequest("Invalid value '' for parameter 'name' supplied")
    if len(name) > MAX_EXPERIMENT_NAME:
        raise BadRequest(f"experiment name exceeds {MAX_EXPERIMENT_NAME} characters")
    tags = {t.key: rq.check_value(t.value, rq.MAX_TAG_VALUE, "value") for t in req.tags}
    for key in tags:
        rq.check_key(key, "key")
    eid = experiment_id_for(svc.write_project, name)

    def existing() -> tuple[dict[str, Any] | None, bool]:
        svc.wait_for([experiment_key(eid), experiment_name_key(svc.write_project, name)])
        try:
            svc.experiments.get(eid)
        except ExperimentNotFound:
            id_taken = False
        else:
            id_taken = True
        return svc.experiments.by_name(name), id_taken

    found, id_taken = await run_in_threadpool(existing)
    if found is not None:
        state = " in deleted state" if found["lifecycle_stage"] == "deleted" else ""
        raise AlreadyExists(f"Experiment '{name}' already exists{state}.")
    if id_taken:  # the experiment that first had this name was renamed: a fresh id
        eid = str(uuid.uuid4())
    event = ExperimentCreated(
        envelope=svc.writer.envelope(eid), name=name, tags=tags, artifact_location=None
    )
    await svc.writer.emit([event], [experiment_name_key(svc.write_project, name)])
    return eid


async def ensure_default_experiment(svc: Services, eid: str) -> None:
    def exists() -> bool:
        try:
            checked_experiment(svc, eid)
        except ExperimentNotFound:
            return False
        return True

    if not await run_in_threadpool(exists):
        env = svc.writer.envelope(eid)
        await svc.writer.emit(
            [ExperimentCreated(envelope=env, name=DEFAULT_EXPERIMENT)],
            [experiment_name_key(svc.write_project, DEFAULT_EXPERIMENT)],
        )


async def _live_experiment(svc: Services, experiment_id: str | None) -> str:
    """The id of a live experiment a write names (404 when absent or deleted). Unlike a run
    create, an experiment write must name it: none is not the Default experiment ("0" is)."""
    if not experiment_id:
        raise BadRequest("Missing value for required parameter 'experiment_id'")
    eid = resolve_experiment_id(svc, experiment_id)
    await run_in_threadpool(checked_experiment, svc, eid)
    return eid


async def update_experiment(svc: Services, req: rq.UpdateExperiment) -> None:
    new_name = (req.new_name or "").strip()  # checked and written as create does
    if not new_name:
        raise BadRequest("Missing value for required parameter 'new_name'")
    if len(new_name) > MAX_EXPERIMENT_NAME:
        raise BadRequest(f"experiment name exceeds {MAX_EXPERIMENT_NAME} characters")
    eid = await _live_experiment(svc, req.experiment_id)

    def holder() -> dict[str, Any] | None:
        svc.wait_for([experiment_name_key(svc.write_project, new_name)])
        return svc.experiments.by_name(new_name)

    taken = await run_in_threadpool(holder)
    if taken is not None and taken["experiment_id"] != eid:
        raise AlreadyExists(f"Experiment '{new_name}' already exists.")
    env = svc.writer.envelope(eid)
    await svc.writer.emit(
        [ExperimentRenamed(envelope=env, name=new_name)],
        [experiment_name_key(svc.write_project, new_name)],
    )


async def delete_experiment(svc: Services, req: rq.ExperimentRef, *, restore: bool) -> None:
    eid = await _live_experiment(svc, req.experiment_id)
    env = svc.writer.envelope(eid)
    event = ExperimentRestored(envelope=env) if restore else ExperimentDeleted(envelope=env)
    await svc.writer.emit([event])


async def set_experiment_tag(svc: Services, req: rq.ExperimentTag, *, delete: bool) -> None:
    rq.check_key(req.key, "key")
    eid = await _live_experiment(svc, req.experiment_id)
    env = svc.writer.envelope(eid)
    if delete:
        await svc.writer.emit([ExperimentTagsRemoved(envelope=env, keys=[req.key])])
    else:
        value = rq.check_value(req.value, rq.MAX_TAG_VALUE, "value")
        await svc.writer.emit([ExperimentTagsSet(envelope=env, tags={req.key: value})])


# -- runs ---------------------------------------------------------------------------------
async def create_run(svc: Services, req: rq.CreateRun, runs: RunDirectory) -> dict[str, Any]:
    tags = {t.key: rq.check_value(t.value, rq.MAX_TAG_VALUE, "value") for t in req.tags}
    for key in tags:
        rq.check_key(key, "key")
    eid = resolve_experiment_id(svc, req.experiment_id)
    if eid == experiment_id_for(svc.write_project, DEFAULT_EXPERIMENT):
        await ensure_default_experiment(svc, eid)
    exp = await run_in_threadpool(checked_experiment, svc, eid)
    if exp["lifecycle_stage"] != "active":
        raise BadRequest(f"The experiment {eid} must be in the 'active' state.")
    run_id = new_event_id().replace("-", "")
    # the id's random tail: its head is the creation time, one for ~65 s
    given = (req.run_name or "").strip() or tags.get(RUN_NAME_TAG, "").strip()
    name = given or f"run-{run_id[-8:]}"
    tags[RUN_NAME_TAG] = name
    user = req.user_id or tags.get("mlflow.user") or ""
    start = req.start_time if req.start_time is not None else now_ms()
    env = svc.writer.envelope(eid, run_id, user=user, occurred_at=start)
    await svc.writer.emit([RunCreated(envelope=env, name=name, tags=tags, start_time=start)])
    run = {
        "run_id": run_id,
        "name": name,
        "experiment_id": eid,
        "status": "RUNNING",
        "start_time": start,
        "end_time": None,
        "lifecycle_stage": "active",
        "tags": tags,
    }
    brief = {**run, "tags": {"mlflow.user": user}}  # what run_info needs, kept small
    runs.put(svc.write_project, run_id, RunEntry(eid, {}, created=brief))
    return run


def _lookup_run(svc: Services, run_id: str, runs: RunDirectory) -> RunEntry:
    svc.wait_for([run_key(run_id)])
    run = svc.runs.info(run_id)  # RunNotFound (404) outside the caller's project too
    if run["lifecycle_stage"] != "active":
        raise BadRequest(
            f"The run {run_id} must be in the 'active' state. Current state is deleted."
        )
    entry = RunEntry(str(run["experiment_id"]), None)
    runs.put(svc.write_project, run_id, entry)
    return entry


async def run_entry(svc: Services, run_id: str, runs: RunDirectory) -> RunEntry:
    """What is known of a live run of the caller's project (404 / 400 otherwise)."""
    known = runs.get(svc.write_project, run_id)
    if known is not None:
        return known
    return await run_in_threadpool(_lookup_run, svc, run_id, runs)


async def run_experiment(svc: Services, run_id: str, runs: RunDirectory) -> str:
    """The experiment of a live run of the caller's project (404 / 400 otherwise)."""
    return (await run_entry(svc, run_id, runs)).experiment_id


async def update_run(svc: Services, req: rq.UpdateRun, runs: RunDirectory) -> dict[str, Any]:
    """Emit the rename / status change; the run-info fields it changes."""
    rid = req.id
    eid = await run_experiment(svc, rid, runs)
    events: list[Any] = []
    changed: dict[str, Any] = {}
    name = (req.run_name or "").strip()
    if name:  # and the mlflow.runName tag, as MLflow keeps them equal
        events.append(RunRenamed(envelope=svc.writer.envelope(eid, rid), name=name))
        events.append(TagsSet(envelope=svc.writer.envelope(eid, rid), tags={RUN_NAME_TAG: name}))
        changed["name"] = name
    if req.status:
        status = _STATUS.get(req.status.upper())
        if status is None:
            raise BadRequest(f"Invalid value {req.status!r} for parameter 'status' supplied")
        env = svc.writer.envelope(eid, rid, occurred_at=req.end_time)
        events.append(RunStatusChanged(envelope=env, status=status))
        changed["status"] = status.value
        if status is not RunStatus.RUNNING:
            changed["end_time"] = env.occurred_at
    await svc.writer.emit(events)
    entry = runs.get(svc.write_project, rid)
    if entry is not None and entry.created is not None:
        entry.created = {**entry.created, **changed}
    return changed


async def delete_run(svc: Services, req: rq.RunRef, runs: RunDirectory, *, restore: bool) -> None:
    rid = req.id

    def lookup() -> str:
        svc.wait_for([run_key(rid)])
        return str(svc.runs.info(rid)["experiment_id"])

    eid = await run_in_threadpool(lookup)
    env = svc.writer.envelope(eid, rid)
    await svc.writer.emit([RunRestored(envelope=env) if restore else RunDeleted(envelope=env)])
    runs.drop(svc.write_project, rid)


async def _check_params(
    svc: Services, rid: str, entry: RunEntry, params: dict[str, str]
) -> dict[str, str]:
    """Params not yet set; 400 for a changed value (MLflow: params are immutable)."""

    def existing() -> dict[str, str]:
        svc.wait_for([run_key(rid)])
        return svc.runs.key_values("params", [rid]).get(rid, {})

    if entry.params is None:
        entry.params = dict(await run_in_threadpool(existing))
    have = entry.params
    for key, value in params.items():
        if key in have and have[key] != value:
            raise BadRequest(
                f"Changing param values is not allowed. Param with key='{key}' was already "
                f"logged with value='{have[key]}' for run ID='{rid}'. Attempted logging new "
                f"value '{value}'."
            )
    return {k: v for k, v in params.items() if have.get(k) != v}


def _remember(entry: RunEntry, params: dict[str, str]) -> None:
    if entry.params is not None:
        entry.params.update(params)


async def log_batch(svc: Services, req: rq.LogBatch, runs: RunDirectory) -> None:
    rq.check_batch(req)
    rid = req.id
    entry = await run_entry(svc, rid, runs)
    eid = entry.experiment_id
    events: list[Any] = []
    params = {p.key: p.value or "" for p in req.params}
    if params:
        params = await _check_params(svc, rid, entry, params)
        if params:
            events.append(ParamsLogged(envelope=svc.writer.envelope(eid, rid), params=params))
    if req.metrics:
        now = now_ms()
        try:
            cols = pack_points(
                [m.key for m in req.metrics],
                [rq.metric_value(m.value, m.key) for m in req.metrics],
                [m.step or 0 for m in req.metrics],
                timestamps=[m.timestamp if m.timestamp is not None else now for m in req.metrics],
            )
        except InvalidEvent as exc:
            raise BadRequest(f"metrics: {exc}") from exc
        events.append(MetricsLogged(envelope=svc.writer.envelope(eid, rid), **cols))
    tags = {t.key: t.value or "" for t in req.tags}
    if tags:
        events.append(TagsSet(envelope=svc.writer.envelope(eid, rid), tags=tags))
    name = tags.get(RUN_NAME_TAG, "").strip()
    if name:  # MLflow: the run's name is its mlflow.runName tag, either way round
        events.append(RunRenamed(envelope=svc.writer.envelope(eid, rid), name=name))
    await svc.writer.emit(events)
    _remember(entry, params)
    if name and entry.created is not None:
        entry.created = {**entry.created, "name": name}


async def delete_tag(svc: Services, req: rq.DeleteTag, runs: RunDirectory) -> None:
    """MLflow: deleting a tag the run does not have is RESOURCE_DOES_NOT_EXIST (read after
    this process's writes to the run are projected)."""
    rid = req.id
    eid = await run_experiment(svc, rid, runs)

    def has_tag() -> bool:
        svc.wait_for([run_key(rid)])
        return req.key in svc.runs.key_values("tags", [rid]).get(rid, {})

    if not await run_in_threadpool(has_tag):
        raise NotFound(f"No tag with name: {req.key} in run with id {rid}")
    await svc.writer.emit([TagsRemoved(envelope=svc.writer.envelope(eid, rid), keys=[req.key])])


async def log_inputs(svc: Services, req: rq.LogInputs, runs: RunDirectory) -> None:
    rid = req.id
    eid = await run_experiment(svc, rid, runs)
    events: list[Any] = []
    for d in req.datasets:
        tags = {t.key: t.value or "" for t in d.tags}
        meta = {
            k: v
            for k, v in (("source_type", d.dataset.source_type), ("schema", d.dataset.schema_))
            if v
        }
        events.append(
            DatasetLinked(
                envelope=svc.writer.envelope(eid, rid),
                direction=LineageDirection.INPUT,
                kind=LineageKind.DATASET,
                name=d.dataset.name or "dataset",
                digest=d.dataset.digest,
                source_uri=d.dataset.source,
                context=tags.get("mlflow.data.context"),
                metadata=meta,
            )
        )
    await svc.writer.emit(events)
