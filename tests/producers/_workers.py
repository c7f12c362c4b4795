"""Entry points for multiprocessing (spawn) tests: importable, top-level functions."""

from __future__ import annotations

from typing import Any


def log_points(cfg_kwargs: dict[str, Any], run_id: str, rank: int, world: int, n: int) -> str:
    """Join run `run_id` as `rank`, log n points of "loss" = rank * 1e6 + step; end."""
    import producers
    from producers.config import ClientConfig

    cfg = ClientConfig(**cfg_kwargs)
    run = producers.start_run(
        "multi",
        run_id=run_id,
        rank=rank,
        world_size=world,
        config=cfg,
        capture_code=False,
        capture_environment=False,
    )
    for step in range(n):
        run.log_metric("loss", rank * 1e6 + step, step=step)
    run.log_metric("acc", float(rank), step=0, split="val")
    producer_id = run.engine.producer_id
    if not run.end(timeout=60):
        raise RuntimeError("not delivered within 60 s")
    return producer_id


def crash_after_logging(cfg_kwargs: dict[str, Any], run_id: str, n: int) -> None:
    """Join as rank 1, log, flush, then die of an uncaught exception (ProducerExited FAILED)."""
    import producers
    from producers.config import ClientConfig

    run = producers.start_run(
        "multi",
        run_id=run_id,
        rank=1,
        world_size=2,
        config=ClientConfig(**cfg_kwargs),
        capture_code=False,
        capture_environment=False,
    )
    with run:
        for step in range(n):
            run.log_metric("loss", float(step), step=step)
        raise ValueError("boom in rank 1")
