"""When the live engines merge `run_search` into one part (`ClickHouseSink.compact_search`)
and prune `projection_position` (`ClickHouseSink.prune_positions`).

Rules (both engines, `ProjectionWorker` and the faust app, follow this one policy):
- Only when the topic went quiet for this process after `run_search` rows were written
  (search reads the table with FINAL, which merges every key range that several parts
  share: over 100 k runs the page-key query takes 75-140 ms unmerged, ~20 ms merged).
- At most every max(`interval`, 50 x the last merge's duration) (~2 % of the time at
  most, whatever the table's size), or 10 x its duration after the last once `after_rows`
  rows were written since (a bulk load is merged as soon as it ends, not up to a minute
  later).
- Only by the process that owns partition 0 of the topic: every worker of a cluster
  shares one table, and one merge of it is enough (one process owning every partition,
  as `runstream serve` does, always merges).
- A failed merge is logged and retried at the next chance: only search speed depends on it.

Position rows (`PositionPruning`): one per batch, so pruned busy or not, at most every
`interval` seconds, by the owner of partition 0 alone (one prune of the shared table is
enough; any process could run it safely, as it reads each partition's newest done batch
from the table itself); a failure is logged and retried at the next interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: the partition whose owner merges the shared table
COMPACTING_PARTITION = 0


class SearchCompaction:
    """The merge policy of one engine (see the module rules); `maybe` is called after
    every step of the engine's loop (or on its timer)."""

    def __init__(self, interval: float, after_rows: int) -> None:
        self.interval = interval
        self.after_rows = after_rows
        self._after = 0.0
        self._soon_after = 0.0
        #: the written-rows count when the table was last merged
        self._rows_at = 0

    async def maybe(
        self,
        merge: Callable[[], None],
        *,
        written: int,
        busy: bool,
        owns_partition_0: bool,
        now: float,
    ) -> None:
        """Merge (`merge`, blocking, run in a thread) if due. `written`: `run_search` rows
        this process wrote since it started; `busy`: batches came in this step."""
        since = written - self._rows_at
        if busy or since <= 0 or not owns_partition_0:
            return
        many = since >= self.after_rows
        if now < (self._soon_after if many else self._after):
            return
        started = time.monotonic()
        try:
            await asyncio.to_thread(merge)
        except Exception as exc:  # noqa: BLE001 - only search speed depends on it
            log.warning("run_search not compacted (%s); retried later", exc)
        else:
            self._rows_at = written
        spent = time.monotonic() - started
        self._after = now + spent + max(self.interval, 50 * spent)
        self._soon_after = now + spent + 10 * spent


class PositionPruning:
    """The position-row pruning policy of one engine (see the module rules); `maybe` is
    called after every step of the engine's loop (or on its timer)."""

    def __init__(self, interval: float, above: int) -> None:
        self.interval = interval
        #: a partition's rows are pruned once it holds more than this many
        self.above = above
        self._after = 0.0

    async def maybe(
        self, prune: Callable[[int], int], *, owns_partition_0: bool, now: float
    ) -> int:
        """Prune (`prune(above)`, blocking, run in a thread; returns the rows dropped) if
        due; returns the rows dropped."""
        if not owns_partition_0 or now < self._after:
            return 0
        self._after = now + self.interval
        try:
            dropped = await asyncio.to_thread(prune, self.above)
        except Exception as exc:  # noqa: BLE001 - the rows stay until the next interval
            log.warning("projection positions not pruned (%s); retried later", exc)
            return 0
        if dropped:
            log.info("dropped %d position rows older than each partition's newest batch", dropped)
        return dropped
