"""Run methods for metadata: params, attributes, tags, notes, name, deletion, lineage, and
the events that announce a run at start.

Rule: each call validates everything first and then enqueues exactly one event (or none when
nothing changed, e.g. a param re-logged with the same value); a param re-logged with another
value in this process raises ParamConflict (across processes the log order decides).
"""

from __future__ import annotations

import os
import platform
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from producers import validation as v
from producers.emit import SDK_VERSION, now_ms
from producers.engine import Engine
from producers.errors import InvalidArgument, ParamConflict, RunStateError
from schemas import events as ev


class MetaMixin:
    """Params, attributes, tags, notes, lifecycle markers, lineage, start-up events."""

    name: str
    _engine: Engine
    _lock: threading.Lock
    _params: dict[str, str]
    _tags: dict[str, str]
    _attributes: dict[str, str]
    _notes: str | None
    experiment: str
    owner: bool
    rank: int | None
    world_size: int | None

    def _event(self, cls: Any, *, experiment_level: bool = False, **fields: Any) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    # ---- params, attributes, tags, notes ------------------------------------------------
    def log_param(self, key: str, value: Any) -> None:
        """Log one param (write-once: a different value for the same key raises)."""
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; re-logging a key with another value in this process raises."""
        self._check_open()
        with self._lock:  # validate, emit and remember as one step (two threads, one key)
            new = self._validated_params(params)
            if new:
                self._event(ev.ParamsLogged, params=new)
                self._params.update(new)

    def _validated_params(self, params: Mapping[str, Any]) -> dict[str, str]:
        v.check_mapping(params, "params")
        new: dict[str, str] = {}
        for key, value in params.items():
            v.check_key(key, "params key")
            text = v.param_value(value, f"params[{key!r}]")
            old = self._params.get(key)
            if old is not None and old != text:
                raise ParamConflict(f"params[{key!r}]", f"already logged as {old!r}, now {text!r}")
            if old is None:
                new[key] = text
        return new

    log_hyperparameter = log_param
    log_hyperparameters = log_params
    log_parameters = log_params

    def log_attribute(self, key: str, value: Any) -> None:
        """Log one attribute: None/bool/int/float/str/list/dict (upsert per key)."""
        self.log_attributes({key: value})

    def log_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._check_open()
        v.check_mapping(attributes, "attributes")
        out = {
            v.check_key(k, "attributes key"): v.attribute_json(val, f"attributes[{k!r}]")
            for k, val in attributes.items()
        }
        if out:
            self._event(ev.AttributesLogged, attributes=out)
            self._attributes.update(out)

    def set_tag(self, key: str, value: Any = "") -> None:
        """Set one tag (a plain label when `value` is empty)."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any] | Iterable[str]) -> None:
        """Set tags from a dict, or labels from a list of names."""
        self._check_open()
        out = self._validated_tags(tags)
        self._event(ev.TagsSet, tags=out)
        self._tags.update(out)

    def _validated_tags(self, tags: Mapping[str, Any] | Iterable[str]) -> dict[str, str]:
        if isinstance(tags, str):
            tags = [tags]
        items = tags.items() if isinstance(tags, Mapping) else ((t, "") for t in tags)
        return {v.check_key(k, "tags key"): v.tag_value(val, f"tags[{k!r}]") for k, val in items}

    log_tag = set_tag
    log_tags = set_tags

    def remove_tag(self, key: str) -> None:
        self.remove_tags([key])

    def remove_tags(self, keys: Iterable[str]) -> None:
        self._check_open()
        names = [v.check_key(k, "key") for k in ([keys] if isinstance(keys, str) else keys)]
        for k in names:
            self._tags.pop(k, None)
        self._event(ev.TagsRemoved, keys=names)

    def set_notes(self, notes: str) -> None:
        """Replace the run's notes (markdown); "" clears them."""
        self._check_open()
        self._notes = v.check_text(notes, "notes", v.MAX_NOTE_LENGTH)
        self._event(ev.RunNoteSet, notes=self._notes)

    set_note = set_notes

    def rename(self, name: str) -> None:
        self._check_open()
        self.name = v.check_text(name, "name", v.MAX_NAME_LENGTH)
        self._event(ev.RunRenamed, name=self.name)

    def delete(self) -> None:
        """Soft-delete the run (restorable). Logging may continue; readers hide it."""
        self._check_engine()
        self._event(ev.RunDeleted)

    def restore(self) -> None:
        self._check_engine()
        self._event(ev.RunRestored)

    def _check_engine(self) -> None:
        if self._engine.closed:
            raise RunStateError("the engine of this run is closed")
        if self._engine.error is not None:
            self._engine.check()

    # ---- lineage ------------------------------------------------------------------------
    def log_input(
        self,
        name: str,
        version: str | None = None,
        digest: str | None = None,
        *,
        kind: str = "DATASET",
        source_uri: str | None = None,
        context: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """The run consumed a dataset or model (kind "DATASET" or "MODEL")."""
        self._lineage("INPUT", name, version, digest, kind, source_uri, context, metadata)

    def log_output(
        self,
        name: str,
        version: str | None = None,
        digest: str | None = None,
        *,
        kind: str = "MODEL",
        source_uri: str | None = None,
        context: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """The run produced a dataset or model."""
        self._lineage("OUTPUT", name, version, digest, kind, source_uri, context, metadata)

    mark_input = log_input
    mark_output = log_output

    def _lineage(
        self,
        direction: str,
        name: str,
        version: str | None,
        digest: str | None,
        kind: str,
        source_uri: str | None,
        context: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self._check_open()
        if kind not in ("DATASET", "MODEL"):
            raise InvalidArgument("kind", f"{kind!r} is not DATASET or MODEL")
        v.check_text(name, "name", v.MAX_NAME_LENGTH)
        for arg, val in (
            ("version", version),
            ("digest", digest),
            ("source_uri", source_uri),
            ("context", context),
        ):
            if val is not None:
                v.check_text(val, arg, v.MAX_TEXT_LENGTH)
        meta = {str(k): v.tag_value(val, f"metadata[{k!r}]") for k, val in (metadata or {}).items()}
        self._event(
            ev.DatasetLinked,
            direction=ev.LineageDirection(direction),
            kind=ev.LineageKind(kind),
            name=name,
            version=version,
            digest=digest,
            source_uri=source_uri,
            context=context,
            metadata=meta,
        )

    # ---- start (called by session.start_run) --------------------------------------------
    def _announce(
        self,
        *,
        create: bool,
        resume: bool,
        notes: str | None,
        tags: dict[str, str],
        params: dict[str, str],
        parent: str | None,
        fork_step: int | None,
        cloned_from: str | None,
    ) -> None:
        self._notes = notes
        self._params.update(params)
        self._tags.update(tags)
        if create:
            self._event(ev.ExperimentCreated, experiment_level=True, name=self.experiment)
            self._event(
                ev.RunCreated,
                name=self.name,
                description=notes,
                tags=tags,
                params=params,
                parent_run_id=parent,
                fork_step=fork_step,
                cloned_from_run_id=cloned_from,
                start_time=now_ms(),
            )
        self._event(
            ev.ProducerJoined,
            host=socket.gethostname(),
            pid=os.getpid(),
            sdk_version=SDK_VERSION,
            rank=self.rank,
            world_size=self.world_size,
            python_version=platform.python_version(),
        )
        if create or resume:
            self._event(
                ev.RunStatusChanged,
                status=ev.RunStatus.RUNNING,
                reason="resumed" if resume else None,
            )
        if not create:
            if params:
                self._event(ev.ParamsLogged, params=params)
            if tags:
                self._event(ev.TagsSet, tags=tags)
            if notes is not None:
                self._event(ev.RunNoteSet, notes=notes)
