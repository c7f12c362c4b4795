"""Experiments read model: list and get (latest state, `experiments FINAL`)."""

from __future__ import annotations

import builtins
from typing import Any

from query_api.errors import ExperimentNotFound
from query_api.repository.store import ReadStore

_COLUMNS = (
    "experiment_id, project, name, description, tags, deleted, "
    "toUnixTimestamp64Milli(created_at) AS creation_time, "
    "toUnixTimestamp64Milli(updated_at) AS last_update_time"
)

_EXP_VIEW = {"ACTIVE_ONLY": "deleted = 0", "DELETED_ONLY": "deleted = 1", "ALL": "1"}


class ExperimentRepository:
    def __init__(self, store: ReadStore, project: str | None) -> None:
        self.store = store
        self.project = project

    def _scope(self, params: dict[str, Any]) -> str:
        if self.project is None:
            return "1"
        params["project"] = self.project
        return "project = {project:String}"

    def list(self, *, include_deleted: bool, limit: int, offset: int) -> list[dict[str, Any]]:
        """One page of experiments, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        deleted = "1" if include_deleted else "deleted = 0"
        rows = self.store.dicts(
            f"SELECT {_COLUMNS} FROM {self.store.db}.experiments FINAL "
            f"WHERE {self._scope(params)} AND {deleted} "
            "ORDER BY creation_time DESC, experiment_id "
            "LIMIT {limit:UInt64} OFFSET {offset:UInt64}",
            params,
        )
        return [_experiment(r) for r in rows]

    def by_name(self, name: str) -> dict[str, Any] | None:
        """The experiment named `name` (live first, then deleted), or None."""
        params: dict[str, Any] = {"name": name}
        rows = self.store.dicts(
            f"SELECT {_COLUMNS} FROM {self.store.db}.experiments FINAL "
            f"WHERE {self._scope(params)} AND name = {{name:String}} "
            "ORDER BY deleted, creation_time DESC LIMIT 1",
            params,
        )
        return _experiment(rows[0]) if rows else None

    def search(
        self, *, view: str, name_like: str | None, limit: int, offset: int
    ) -> builtins.list[dict[str, Any]]:
        """MLflow's experiment search: lifecycle view and an optional name LIKE pattern."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        conds = [self._scope(params), _EXP_VIEW.get(view, "deleted = 0")]
        if name_like is not None:
            params["like"] = name_like
            conds.append("name LIKE {like:String}")
        rows = self.store.dicts(
            f"SELECT {_COLUMNS} FROM {self.store.db}.experiments FINAL "
            f"WHERE {' AND '.join(conds)} ORDER BY creation_time DESC, experiment_id "
            "LIMIT {limit:UInt64} OFFSET {offset:UInt64}",
            params,
        )
        return [_experiment(r) for r in rows]

    def get(self, experiment_id: str) -> dict[str, Any]:
        params: dict[str, Any] = {"id": experiment_id}
        rows = self.store.dicts(
            f"SELECT {_COLUMNS} FROM {self.store.db}.experiments FINAL "
            f"WHERE {self._scope(params)} AND experiment_id = {{id:String}} LIMIT 1",
            params,
        )
        if not rows:
            raise ExperimentNotFound(experiment_id)
        return _experiment(rows[0])


def _experiment(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiment_id": row["experiment_id"],
        "project": row["project"],
        "name": row["name"],
        "description": row["description"],
        "tags": dict(row["tags"]),
        "lifecycle_stage": "deleted" if row["deleted"] else "active",
        "creation_time": row["creation_time"],
        "last_update_time": row["last_update_time"],
    }
