"""Process-wide state: `start_run()`, the active-run stack, engines, and exit handling.

Rule: one engine per destination (shared by the runs that go there), closed when its last
run ends; the active run is the most recent one not yet ended. Exit handling (final statuses,
bounded wait) lives in `producers.exits`; a forked child never reuses its parent's engine.

Distributed runs (torchrun, SLURM, multiprocessing): every process calls `start_run` with the
same run id, e.g. `start_run(run_id=os.environ["RUNSTREAM_RUN_ID"])`; `RANK`/`WORLD_SIZE`
are read from the environment (torchrun sets them). Rank 0 (or a process without a rank that
was given the id explicitly) creates the run and owns its status; other ranks join. A run
id taken from `RUNSTREAM_RUN_ID` without a rank joins (the parent created the run, see
`Run.child_env()`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import astuple
from pathlib import Path
from typing import Any

from producers import exits
from producers import validation as v
from producers.artifacts import ArtifactStore
from producers.config import ClientConfig
from producers.console import ConsoleCapture
from producers.emit import Emitter, experiment_id_for
from producers.engine import Engine, EngineOptions, default_meta
from producers.errors import InvalidArgument, NoActiveRun
from producers.run import Run
from producers.sysmetrics import SYSTEM_SPLIT, SystemSampler
from producers.transport import make_transport
from schemas.ids import new_event_id

EXIT_TIMEOUT_S = 10.0
DEFAULT_EXPERIMENT = "Default"

_lock = threading.RLock()
_active: list[Run] = []
_engines: dict[tuple[Any, ...], Engine] = {}


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidArgument(name, f"environment variable is not an int: {raw!r}") from exc


def get_engine(config: ClientConfig, options: EngineOptions | None = None) -> Engine:
    """The engine for `config` (shared by runs with the same destination and options)."""
    key = (
        config.mode,
        config.kafka_bootstrap,
        config.api_url,
        config.topic,
        config.spool_dir,
        astuple(options or EngineOptions()),
    )
    with _lock:
        eng = _engines.get(key)
        if eng is None or eng.closed:
            producer_id = new_event_id()
            eng = Engine(
                producer_id,
                Path(config.spool_dir).expanduser() / producer_id,
                make_transport(config),
                options,
                meta=default_meta(
                    producer_id, config.topic, {"mode": config.mode, "project": config.project}
                ),
            )
            _engines[key] = eng
        return eng


def start_run(
    experiment: str | None = None,
    name: str | None = None,
    *,
    run_id: str | None = None,
    resume: bool = False,
    join: bool | None = None,
    tags: Mapping[str, Any] | Iterable[str] | None = None,
    params: Mapping[str, Any] | None = None,
    notes: str | None = None,
    parent: str | None = None,
    fork_from: tuple[str, int] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    config: ClientConfig | None = None,
    project: str | None = None,
    mode: str | None = None,
    topic: str | None = None,
    spool_dir: str | None = None,
    kafka_bootstrap: str | None = None,
    user: str | None = None,
    capture_code: bool = True,
    capture_environment: bool = True,
    system_metrics: bool | float = False,
    capture_console: bool = False,
    options: EngineOptions | None = None,
    cloned_from: str | None = None,
) -> Run:
    """Start (or join, or resume) a run and make it the active run. Usable with `with`.

    Args:
        experiment: experiment name (default `$RUNSTREAM_EXPERIMENT` or "Default").
        name: display name of the run (default derived from the id).
        run_id: join/create this id (default `$RUNSTREAM_RUN_ID`, else a new UUIDv7).
        resume: attach to an existing run and own its status again (no RunCreated).
        join: force the joining role (log only; no RunCreated, no status ownership).
        tags, params, notes: initial tags (dict or list of labels), params, notes.
        parent: parent run id (nested run). fork_from: (run_id, step) to fork from.
        rank, world_size: distributed rank (default `$RANK`, `$WORLD_SIZE`).
        config: a ClientConfig (default `ClientConfig.from_env()`); `project`, `mode`,
            `topic`, `spool_dir`, `kafka_bootstrap` override single fields.
        capture_code, capture_environment: emit CodeCaptured / EnvironmentCaptured.
        system_metrics: True (every 15 s) or an interval in seconds for CPU/memory/GPU
            sampling (split "system").
        capture_console: tee stdout/stderr into ConsoleLogged events.
        options: engine tuning (buffer bound, linger, fsync policy...).
        cloned_from: the run this one is a clone of (set by `Run.clone`).
    """
    cfg = (config or ClientConfig.from_env()).with_overrides(
        project=project,
        mode=mode,
        topic=topic,
        spool_dir=spool_dir,
        kafka_bootstrap=kafka_bootstrap,
    )
    experiment = experiment or os.environ.get("RUNSTREAM_EXPERIMENT") or DEFAULT_EXPERIMENT
    v.check_text(experiment, "experiment", v.MAX_NAME_LENGTH)
    if not experiment.strip():
        raise InvalidArgument("experiment", "must not be blank")
    rank = _env_int("RANK") if rank is None else v.check_int64(rank, "rank", minimum=0)
    world_size = (
        _env_int("WORLD_SIZE")
        if world_size is None
        else v.check_int64(world_size, "world_size", minimum=1)
    )
    from_env = run_id is None and bool(os.environ.get("RUNSTREAM_RUN_ID"))
    if run_id is None:
        run_id = os.environ.get("RUNSTREAM_RUN_ID") or None
    given = run_id is not None
    if run_id is not None:
        v.check_text(run_id, "run_id", 128)
        if not run_id or not all(c.isalnum() or c in "-_." for c in run_id):
            raise InvalidArgument("run_id", f"{run_id!r}: letters, digits, '-', '_', '.'")
    else:
        run_id = new_event_id()
    if join is None:
        join = (
            given
            and not resume
            and ((rank is not None and rank > 0) or (from_env and rank is None))
        )
    if join and resume:
        raise InvalidArgument("join", "join=True and resume=True exclude each other")
    create = not join and not resume
    if name is not None:
        v.check_text(name, "name", v.MAX_NAME_LENGTH)
    name = name or f"run-{run_id.replace('-', '')[-10:]}"
    fork_step = None
    if fork_from is not None:
        if parent is not None:
            raise InvalidArgument("fork_from", "give either parent or fork_from, not both")
        if not isinstance(fork_from, tuple) or len(fork_from) != 2:
            raise InvalidArgument("fork_from", "must be a (run_id, step) tuple")
        parent = v.check_text(fork_from[0], "fork_from[0]", 128)
        fork_step = v.check_int64(fork_from[1], "fork_from[1]", minimum=0)
    elif parent is not None:
        v.check_text(parent, "parent", 128)
    if notes is not None:
        v.check_text(notes, "notes", v.MAX_NOTE_LENGTH)

    engine = get_engine(cfg, options)
    engine.check()
    emitter = Emitter(
        engine,
        project=cfg.project,
        experiment_id=experiment_id_for(cfg.project, experiment),
        run_id=run_id,
        user=user,
    )
    run = Run(
        engine,
        emitter,
        name=name,
        experiment=experiment,
        owner=create or resume,
        rank=rank,
        world_size=world_size,
        artifacts_factory=_artifacts_factory(cfg, run_id),
        config=cfg,
    )
    try:
        tag_map = run._validated_tags(tags or {})
        param_map = run._validated_params(params or {})
        run._announce(
            create=create,
            resume=resume,
            notes=notes,
            tags=tag_map,
            params=param_map,
            parent=parent,
            fork_step=fork_step,
            cloned_from=cloned_from,
        )
        if capture_code:
            run.log_code()
        if capture_environment:
            run.log_environment()
    except BaseException:
        engine.unregister(run)
        raise
    _start_side_threads(run, system_metrics, capture_console)
    with _lock:
        _active.append(run)
    exits.install(shutdown)
    return run


init = start_run


def _artifacts_factory(cfg: ClientConfig, run_id: str) -> Callable[[], ArtifactStore] | None:
    """Direct S3 with credentials; in HTTP mode without them, presigned URLs from the API."""
    if cfg.s3_endpoint:
        return lambda: ArtifactStore(cfg)
    if cfg.mode == "http" and cfg.api_url:
        from producers.presigned import PresignedArtifactStore

        return lambda: PresignedArtifactStore(cfg, run_id)
    return None


def _start_side_threads(run: Run, system_metrics: bool | float, console: bool) -> None:
    if system_metrics:
        interval = 15.0 if system_metrics is True else float(system_metrics)

        def log_sys(values: dict[str, float], step: int) -> None:
            if not run._ended:
                run.log_metrics(values, step=step, split=SYSTEM_SPLIT)

        sampler = SystemSampler(log_sys, interval)
        sampler.start()
        run._side_threads.append(sampler)
    if console:
        capture = ConsoleCapture()
        capture.install()
        run._console = capture
        run._side_threads.append(_ConsoleStopper(capture, run))


class _ConsoleStopper:
    def __init__(self, capture: ConsoleCapture, run: Run) -> None:
        self.capture = capture
        self.run = run

    def stop(self) -> None:
        self.capture.uninstall()
        self.run.drain_console()


def clone(
    run: Run, *, experiment: str | None = None, name: str | None = None, **kwargs: Any
) -> Run:
    """A new run with the params, tags and notes this process knows of `run`.

    (What other producers logged is not known locally; a full server-side clone needs the
    query API.) RunCreated.cloned_from_run_id records the source.
    """
    kwargs.setdefault("capture_code", False)
    kwargs.setdefault("capture_environment", False)
    kwargs.setdefault("config", run.config)
    kwargs.setdefault("options", run.engine.options)
    return start_run(
        experiment or run.experiment,
        name or f"{run.name}-clone",
        tags=run.tags,
        params=run.params,
        notes=run.notes,
        cloned_from=run.id,
        **kwargs,
    )


def release_engine(engine: Engine) -> bool:
    """Forget `engine` when no run uses it any more; True when the caller should close it."""
    with _lock:
        if engine.has_sources():
            return False
        for key, eng in list(_engines.items()):
            if eng is engine:
                del _engines[key]
        return True


def active_run() -> Run | None:
    with _lock:
        return _active[-1] if _active else None


def require_active() -> Run:
    run = active_run()
    if run is None:
        raise NoActiveRun("no active run: call runstream.start_run() / init() first")
    return run


def forget(run: Run) -> None:
    with _lock, contextlib.suppress(ValueError):
        _active.remove(run)


def shutdown(
    status: str | None = None, reason: str | None = None, timeout: float = EXIT_TIMEOUT_S
) -> None:
    """End every active run (default FINISHED) and close every engine, bounded. A run whose
    engine was closed under it can never be ended: reported once and forgotten (the atexit
    hook calls this again)."""
    with _lock:
        runs = list(reversed(_active))
        engines = list(_engines.values())
    for run in runs:
        try:
            run.end(status or "FINISHED", reason=reason, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - at exit: report, never hide
            sys.stderr.write(f"runstream: ending run {run.id} failed: {exc!r}\n")
            if run.engine.closed:
                forget(run)
    for eng in engines:
        try:
            eng.close(timeout)
        except Exception as exc:  # noqa: BLE001
            sys.stderr.write(f"runstream: closing engine {eng.producer_id} failed: {exc!r}\n")


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()
    for eng in _engines.values():
        eng.mark_forked()
    _engines.clear()
    _active.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
