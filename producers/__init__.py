"""Runstream client SDK: log runs from training code as immutable events.

Rule: logging never blocks on the network. Calls validate their input, append to memory and
return; a background engine spools events to local disk (write-ahead) and sends them to
Kafka (or the API's ingest endpoint). See producers/README.md for the durability contract.

Quick start::

    import producers as rs  # re-exported by the `runstream` facade

    with rs.start_run("mnist", params={"lr": 0.01}) as run:
        for step in range(1000):
            run.log_metric("loss", loss, step=step)
        run.log_artifact("model.pt")

Module-level helpers (`log_metric`, `log_params`, `set_tag`, ...) act on the active run (the
most recently started one that has not ended).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from producers.artifacts import ArtifactInfo
from producers.config import ClientConfig
from producers.engine import EngineOptions, EngineStatus
from producers.errors import (
    ArtifactError,
    ArtifactExists,
    ArtifactNotFound,
    BackgroundError,
    ConfigError,
    InvalidArgument,
    InvalidKey,
    InvalidType,
    NoActiveRun,
    ParamConflict,
    RunStateError,
    RunstreamError,
    ValueTooLong,
)
from producers.run import Run
from producers.session import active_run, init, require_active, shutdown, start_run

__all__ = [
    "ArtifactError",
    "ArtifactExists",
    "ArtifactInfo",
    "ArtifactNotFound",
    "BackgroundError",
    "ClientConfig",
    "ConfigError",
    "EngineOptions",
    "EngineStatus",
    "InvalidArgument",
    "InvalidKey",
    "InvalidType",
    "NoActiveRun",
    "ParamConflict",
    "Run",
    "RunStateError",
    "RunstreamError",
    "ValueTooLong",
    "active_run",
    "alert_on",
    "end",
    "finish",
    "flush",
    "init",
    "log_artifact",
    "log_attribute",
    "log_attributes",
    "log_classification_metrics",
    "log_image",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_output",
    "log_param",
    "log_params",
    "log_table",
    "remove_tag",
    "set_notes",
    "set_tag",
    "set_tags",
    "shutdown",
    "start_run",
]


def log_metric(
    key: str,
    value: float,
    step: int | None = None,
    epoch: int | None = None,
    timestamp: Any = None,
    split: str | None = None,
) -> None:
    """`Run.log_metric` on the active run."""
    require_active().log_metric(key, value, step, epoch, timestamp, split)


def log_metrics(
    metrics: Mapping[str, Any],
    step: int | None = None,
    epoch: int | None = None,
    timestamp: Any = None,
    split: str | None = None,
) -> None:
    """`Run.log_metrics` on the active run."""
    require_active().log_metrics(metrics, step, epoch, timestamp, split)


def log_param(key: str, value: Any) -> None:
    require_active().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    require_active().log_params(params)


def log_attribute(key: str, value: Any) -> None:
    require_active().log_attribute(key, value)


def log_attributes(attributes: Mapping[str, Any]) -> None:
    require_active().log_attributes(attributes)


def set_tag(key: str, value: Any = "") -> None:
    require_active().set_tag(key, value)


def set_tags(tags: Mapping[str, Any] | Iterable[str]) -> None:
    require_active().set_tags(tags)


def remove_tag(key: str) -> None:
    require_active().remove_tag(key)


def set_notes(notes: str) -> None:
    require_active().set_notes(notes)


def log_artifact(artifact: Any, key: str | None = None, **kwargs: Any) -> ArtifactInfo:
    return require_active().log_artifact(artifact, key, **kwargs)


def log_image(key: str, image: Any, **kwargs: Any) -> ArtifactInfo:
    return require_active().log_image(key, image, **kwargs)


def log_table(key: str, data: Any, **kwargs: Any) -> ArtifactInfo:
    return require_active().log_table(key, data, **kwargs)


def log_classification_metrics(*args: Any, **kwargs: Any) -> None:
    require_active().log_classification_metrics(*args, **kwargs)


def log_input(
    name: str, version: str | None = None, digest: str | None = None, **kwargs: Any
) -> None:
    require_active().log_input(name, version, digest, **kwargs)


def log_output(
    name: str, version: str | None = None, digest: str | None = None, **kwargs: Any
) -> None:
    require_active().log_output(name, version, digest, **kwargs)


def alert_on(key: str, op: str, threshold: float, text: str | None = None, **kwargs: Any) -> None:
    require_active().alert_on(key, op, threshold, text, **kwargs)


def flush(timeout: float | None = 30.0) -> bool:
    """Wait (bounded) until the active run's events are delivered; False on timeout."""
    return require_active().flush(timeout)


def end(status: str = "FINISHED", **kwargs: Any) -> bool:
    """End the active run (see `Run.end`)."""
    return require_active().end(status, **kwargs)


finish = end
