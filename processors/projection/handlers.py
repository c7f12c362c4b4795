"""Per-event-type handlers: parse first (may raise: poison), then mutate the context.

Rules: first by log order wins for write-once facts (params, artifact keys without
overwrite, run/experiment creation, experiment names); the loser goes to rejected_events.
Everything else is last-writer-wins by log offset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processors.model import Decoded, epoch_ms
from processors.projection.context import BatchContext, opt_int, str_map
from processors.state import ArtifactState, ParamState

TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
Handler = Callable[[BatchContext, Decoded], None]


def _experiment_created(b: BatchContext, ev: Decoded) -> None:
    name = str(ev.record["name"])
    desc = str(ev.record.get("description") or "")
    tags = str_map(ev.record.get("tags"))
    e = ev.env
    existing = b.state.experiments.get(e.experiment_id)
    if existing is not None and existing.created_event_id:
        b.reject(
            ev, "experiment_exists", e.experiment_id, {"name": name}, existing.created_event_id
        )
        return
    holder = b.state.experiment_names.get((e.project, name))
    if holder is not None and holder != e.experiment_id:
        b.reject(ev, "experiment_name_taken", name, {"held_by": holder}, holder)
        return
    st = b.experiment(ev)
    st.name, st.description, st.tags = name, desc, tags
    st.created_at = e.occurred_at
    st.created_event_id = e.event_id
    b.state.experiment_names[(e.project, name)] = e.experiment_id
    b.touch_experiment(ev, st)


def _experiment_renamed(b: BatchContext, ev: Decoded) -> None:
    name = str(ev.record["name"])
    e = ev.env
    holder = b.state.experiment_names.get((e.project, name))
    if holder is not None and holder != e.experiment_id:
        b.reject(ev, "experiment_name_taken", name, {"held_by": holder}, holder)
        return
    st = b.experiment(ev)
    if st.name and b.state.experiment_names.get((e.project, st.name)) == e.experiment_id:
        b.state.experiment_names[(e.project, st.name)] = None
    st.name = name
    b.state.experiment_names[(e.project, name)] = e.experiment_id
    b.touch_experiment(ev, st)


def _experiment_flag(deleted: int) -> Handler:
    """Delete frees the experiment's name, restore claims it back (the holder of a name two
    live experiments share is the smallest experiment_id, as `ClickHouseSink` loads it)."""

    def handler(b: BatchContext, ev: Decoded) -> None:
        st = b.experiment(ev)
        st.deleted = deleted
        names, k = b.state.experiment_names, (st.project, st.name)
        if st.name and deleted and names.get(k) == st.experiment_id:
            names[k] = None
        elif st.name and not deleted:
            holder = names.get(k)
            names[k] = st.experiment_id if holder is None else min(holder, st.experiment_id)
        b.touch_experiment(ev, st)

    return handler


def _experiment_tags(b: BatchContext, ev: Decoded) -> None:
    tags = str_map(ev.record.get("tags"))
    st = b.experiment(ev)
    st.tags = {**st.tags, **tags}
    b.touch_experiment(ev, st)


def _experiment_tags_removed(b: BatchContext, ev: Decoded) -> None:
    keys = {str(k) for k in ev.record["keys"]}
    st = b.experiment(ev)
    st.tags = {k: v for k, v in st.tags.items() if k not in keys}
    b.touch_experiment(ev, st)


def _run_created(b: BatchContext, ev: Decoded) -> None:
    r = ev.record
    name, notes = str(r.get("name") or ""), str(r.get("description") or "")
    tags, params = str_map(r.get("tags")), str_map(r.get("params"))
    parent, clone = r.get("parent_run_id"), r.get("cloned_from_run_id")
    fork_step = opt_int(r.get("fork_step"))
    start = r.get("start_time")
    existing = b.state.runs.get(ev.env.run_id)
    if existing is not None and existing.created_event_id:
        b.reject(ev, "run_exists", ev.env.run_id, {"name": name}, existing.created_event_id)
        return
    st = b.run(ev)
    st.name, st.notes = name, notes
    st.parent_run_id = None if parent is None else str(parent)
    st.cloned_from_run_id = None if clone is None else str(clone)
    st.fork_step = fork_step
    st.start_time = ev.env.occurred_at if start is None else _ms(start)
    st.created_at = ev.env.occurred_at
    st.created_event_id = ev.env.event_id
    b.touch_run(ev, st)
    _log_params(b, ev, params)
    _set_tags(b, ev, tags)


def _ms(value: Any) -> int:
    return epoch_ms(value)


def _run_field(field: str, source: str) -> Handler:
    def handler(b: BatchContext, ev: Decoded) -> None:
        value = str(ev.record.get(source) or "")
        st = b.run(ev)
        setattr(st, field, value)
        b.touch_run(ev, st)

    return handler


def _run_status(b: BatchContext, ev: Decoded) -> None:
    status = str(ev.record["status"])
    reason = str(ev.record.get("reason") or "")
    st = b.run(ev)
    st.status, st.status_reason = status, reason
    st.end_time = ev.env.occurred_at if status in TERMINAL else None
    b.touch_run(ev, st)


def _run_flag(deleted: int) -> Handler:
    def handler(b: BatchContext, ev: Decoded) -> None:
        st = b.run(ev)
        st.deleted = deleted
        b.touch_run(ev, st)

    return handler


def _log_params(b: BatchContext, ev: Decoded, params: dict[str, str]) -> None:
    known = b.state.params.setdefault(ev.env.run_id, {})
    for key in sorted(params):
        value = params[key]
        cur = known.get(key)
        if cur is None:
            known[key] = ParamState(value, ev.env.event_id)
            b.add_run_row(
                "params", ev, {**b.base(ev), "key": key, "value": value, "log_offset": ev.offset}
            )
        elif cur.value != value:
            b.reject(
                ev, "param_conflict", key, {"value": value, "existing": cur.value}, cur.event_id
            )


def _params_logged(b: BatchContext, ev: Decoded) -> None:
    _log_params(b, ev, str_map(ev.record["params"]))


def _set_tags(b: BatchContext, ev: Decoded, tags: dict[str, str]) -> None:
    for key in sorted(tags):
        b.add_run_row(
            "tags",
            ev,
            {**b.base(ev), "key": key, "value": tags[key], "deleted": 0, "version": ev.offset},
        )


def _tags_set(b: BatchContext, ev: Decoded) -> None:
    _set_tags(b, ev, str_map(ev.record["tags"]))


def _tags_removed(b: BatchContext, ev: Decoded) -> None:
    for key in sorted(str(k) for k in ev.record["keys"]):
        b.add_run_row(
            "tags", ev, {**b.base(ev), "key": key, "value": "", "deleted": 1, "version": ev.offset}
        )


def _attributes(b: BatchContext, ev: Decoded) -> None:
    attrs = str_map(ev.record["attributes"])
    for key in sorted(attrs):
        b.rows.add(
            "attributes", {**b.base(ev), "key": key, "value": attrs[key], "version": ev.offset}
        )


def _metrics(b: BatchContext, ev: Decoded) -> None:
    run = b.state.runs.get(ev.env.run_id)
    b.points.add(ev, None if run is None else (run.project, run.experiment_id))


def _artifact_stored(b: BatchContext, ev: Decoded) -> None:
    r = ev.record
    row = {
        **b.base(ev),
        "key": str(r["key"]),
        "uri": str(r["uri"]),
        "size": int(r["size"]),
        "sha256": str(r.get("sha256") or ""),
        "content_type": str(r.get("content_type") or ""),
        "kind": str(r.get("kind") or ""),
        "step": opt_int(r.get("step")),
        "metadata": str_map(r.get("metadata")),
        "deleted": 0,
        "version": ev.offset,
    }
    k = (ev.env.run_id, row["key"])
    cur = b.state.artifacts.get(k)
    if cur is not None and not cur.deleted and not r.get("overwrite"):
        b.reject(ev, "artifact_exists", row["key"], {"uri": row["uri"]}, cur.event_id)
        return
    b.state.artifacts[k] = ArtifactState(ev.env.event_id, 0)
    b.rows.add("artifact_versions", row)
    b.rows.add("artifacts", row)


def _artifact_deleted(b: BatchContext, ev: Decoded) -> None:
    key = str(ev.record["key"])
    k = (ev.env.run_id, key)
    b.state.artifacts[k] = ArtifactState(ev.env.event_id, 1)
    row = {
        **b.base(ev),
        "key": key,
        "uri": "",
        "size": 0,
        "sha256": "",
        "content_type": "",
        "kind": "",
        "step": None,
        "metadata": {},
        "deleted": 1,
        "version": ev.offset,
    }
    b.rows.add("artifact_versions", row)
    b.rows.add("artifacts", row)


def _dataset_linked(b: BatchContext, ev: Decoded) -> None:
    r = ev.record
    b.rows.add(
        "lineage",
        {
            **b.base(ev),
            "direction": str(r["direction"]),
            "kind": str(r.get("kind") or "DATASET"),
            "name": str(r["name"]),
            "version": str(r.get("version") or ""),
            "digest": str(r.get("digest") or ""),
            "source_uri": str(r.get("source_uri") or ""),
            "context": str(r.get("context") or ""),
            "metadata": str_map(r.get("metadata")),
            "row_version": ev.offset,
        },
    )


def _alert(b: BatchContext, ev: Decoded) -> None:
    r = ev.record
    b.rows.add(
        "alerts",
        {
            **b.base(ev),
            "rule_id": str(r.get("rule_id") or ""),
            "key": str(r.get("key") or ""),
            "op": str(r.get("op") or ""),
            "threshold": float(r.get("threshold") or 0.0),
            "value": float(r.get("value") or 0.0),
            "step": opt_int(r.get("step")),
            "text": str(r.get("text") or ""),
            "level": str(r.get("level") or ""),
        },
    )


def _producer_joined(b: BatchContext, ev: Decoded) -> None:
    r = ev.record
    host, pid = str(r.get("host") or ""), int(r.get("pid") or 0)
    rank = -1 if r.get("rank") is None else int(r["rank"])
    world = -1 if r.get("world_size") is None else int(r["world_size"])
    p = b.producer(ev)
    p.host, p.pid, p.rank, p.world_size = host, pid, rank, world
    p.status, p.reason, p.joined_at, p.exited_at = "ACTIVE", "", ev.env.occurred_at, None


def _producer_exited(b: BatchContext, ev: Decoded) -> None:
    status, reason = str(ev.record.get("status") or "EXITED"), str(ev.record.get("reason") or "")
    p = b.producer(ev)
    p.status, p.reason, p.exited_at = status, reason, ev.env.occurred_at


HANDLERS: dict[str, Handler] = {
    "ExperimentCreated": _experiment_created,
    "ExperimentRenamed": _experiment_renamed,
    "ExperimentDeleted": _experiment_flag(1),
    "ExperimentRestored": _experiment_flag(0),
    "ExperimentTagsSet": _experiment_tags,
    "ExperimentTagsRemoved": _experiment_tags_removed,
    "RunCreated": _run_created,
    "RunRenamed": _run_field("name", "name"),
    "RunNoteSet": _run_field("notes", "notes"),
    "RunStatusChanged": _run_status,
    "RunDeleted": _run_flag(1),
    "RunRestored": _run_flag(0),
    "ProducerJoined": _producer_joined,
    "ProducerExited": _producer_exited,
    "ParamsLogged": _params_logged,
    "TagsSet": _tags_set,
    "TagsRemoved": _tags_removed,
    "AttributesLogged": _attributes,
    "MetricsLogged": _metrics,
    "ArtifactStored": _artifact_stored,
    "ArtifactDeleted": _artifact_deleted,
    "DatasetLinked": _dataset_linked,
    "AlertTriggered": _alert,
}
