"""Read-model repositories: the only code that writes SQL for the API (see each module's rule)."""

from query_api.repository.experiments import ExperimentRepository
from query_api.repository.metrics import Axis, Cursor, Grid, MetricRepository, Series
from query_api.repository.runs import RunRepository, SearchQuery, ViewType
from query_api.repository.store import ClientFactory, ReadStore

__all__ = [
    "Axis",
    "ClientFactory",
    "Cursor",
    "ExperimentRepository",
    "Grid",
    "MetricRepository",
    "ReadStore",
    "RunRepository",
    "SearchQuery",
    "Series",
    "ViewType",
]
