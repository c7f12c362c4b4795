"""Pure projections: events -> rows (no I/O). See `core.project_batch`."""

from processors.projection.core import HANDLERS, Projected, payload_json, project_batch
from processors.projection.metrics import PointBuffer

__all__ = ["HANDLERS", "PointBuffer", "Projected", "payload_json", "project_batch"]
