"""The pure projection: (events of one partition batch, state before it) -> rows.

Rules (the README documents them as the table contract):
- Duplicate = an event_id already projected at a smaller log offset (client resend); it
  produces nothing. A redelivery (same offset) is NOT a duplicate: it produces the same rows.
- Conflicts that only the log can order are decided first-wins by log order; the loser is
  written to `rejected_events` (never dropped): a param re-logged with another value, an
  artifact key stored again without `overwrite`, a run or experiment created twice, an
  experiment name already held by another experiment of the project.
- Everything else is last-writer-wins by log offset (`version` = offset).
- An event whose projection raises is poison: its partial rows are rolled back and it goes
  to the DLQ; the batch goes on.
"""

from __future__ import annotations

from collections.abc import Sequence

from processors.model import Decoded
from processors.projection.context import BatchContext, Projected, payload_json
from processors.projection.handlers import HANDLERS
from processors.state import PartitionState

__all__ = ["HANDLERS", "Projected", "payload_json", "project_batch"]


def project_batch(events: Sequence[Decoded], state: PartitionState) -> Projected:
    """Project one batch of ONE partition, in log order, advancing `state` in place.

    `state` must hold everything the batch needs (see `needs()`), as of the batch's first
    offset; `state.seen` must map the batch's event_ids to offsets already projected.
    """
    b = BatchContext(state, HANDLERS)
    for ev in sorted(events, key=lambda e: e.offset):
        b.one(ev)
    return b.finish()
