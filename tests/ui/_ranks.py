"""Entry point of a spawned rank process (importable, top level): a second rank of a run."""

from __future__ import annotations

import math
from typing import Any


def train_rank(cfg_kwargs: dict[str, Any], run_id: str, rank: int, world: int, steps: int) -> None:
    """Join `run_id` as `rank` and log train/val loss and acc like a data-parallel worker."""
    import producers
    from producers.config import ClientConfig

    run = producers.start_run(
        "ui-demo",
        run_id=run_id,
        rank=rank,
        world_size=world,
        config=ClientConfig(**cfg_kwargs),
        capture_code=False,
        capture_environment=False,
    )
    for step in range(steps):
        loss = 2.0 * math.exp(-step / (steps / 4)) + 0.01 * rank
        run.log_metrics({"loss": loss, "acc": 1 - loss / 3}, step=step, split="train")
        if step % 50 == 0:
            run.log_metrics({"loss": loss * 1.1}, step=step, split="val")
    if not run.end(timeout=60):
        raise RuntimeError("rank not delivered within 60 s")
