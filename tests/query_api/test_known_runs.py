"""`KnownRuns`: a run found once is not looked up again in that database, for that project;
anything else is (chDB, the test database)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from query_api.errors import RunNotFound
from query_api.repository.store import ReadStore
from query_api.repository.summaries import KnownRuns, existing_runs, require_runs
from tests.query_api.readmodels import ReadModels


class CountingStore(ReadStore):
    """A ReadStore that counts the queries of `existing_runs` (those reading `runs`)."""

    lookups = 0

    def rows(
        self, sql: str, params: Mapping[str, Any], formats: Mapping[str, str] | None = None
    ) -> list[Sequence[Any]]:
        if ".runs " in sql:
            self.lookups += 1
        return super().rows(sql, params, formats)


@pytest.fixture
def store(chdb_client: Any, models: ReadModels) -> CountingStore:
    # pointer_ttl_s=0: the database's UUID is read again on every lookup
    return CountingStore(lambda: chdb_client, models.db, pointer_ttl_s=0)


def test_a_found_run_is_not_looked_up_again(store: CountingStore, models: ReadModels) -> None:
    models.run("a")
    known = KnownRuns()
    assert existing_runs(store, ["a", "b"], "default", known) == {"a"}
    assert store.lookups == 1
    assert existing_runs(store, ["a"], "default", known) == {"a"}
    assert store.lookups == 1  # held
    require_runs(store, ["a"], "default", known)
    assert store.lookups == 1
    # b was missing: asked again every time, found once it lands
    with pytest.raises(RunNotFound):
        require_runs(store, ["a", "b"], "default", known)
    assert store.lookups == 2
    models.run("b")
    assert existing_runs(store, ["a", "b"], "default", known) == {"a", "b"}
    assert store.lookups == 3
    assert existing_runs(store, ["b", "a"], "default", known) == {"a", "b"}
    assert store.lookups == 3


def test_a_run_held_for_one_project_is_not_found_for_another(
    store: CountingStore, models: ReadModels
) -> None:
    models.run("a", project="p1")
    known = KnownRuns()
    assert existing_runs(store, ["a"], "p1", known) == {"a"}
    assert existing_runs(store, ["a"], None, known) == {"a"}  # every project: found
    with pytest.raises(RunNotFound):
        require_runs(store, ["a"], "p2", known)
    with pytest.raises(RunNotFound):
        require_runs(store, ["a"], "p2", known)
    assert store.lookups == 4  # p2 looked up twice: nothing held for it


def test_a_database_created_again_starts_with_nothing_held(
    chdb_client: Any, store: CountingStore, models: ReadModels
) -> None:
    models.run("a")
    known = KnownRuns()
    assert existing_runs(store, ["a"], "default", known) == {"a"}
    chdb_client.command(f"DROP DATABASE {models.db} SYNC")
    chdb_client.command(f"CREATE DATABASE {models.db}")
    models.migrate()
    assert existing_runs(store, ["a"], "default", known) == set()
    assert store.lookups == 2


def test_the_least_recently_used_runs_go_first() -> None:
    gen = ("db", "uuid")
    known = KnownRuns(capacity=2)
    known.add(gen, "default", {"a", "b"})
    assert known.held(gen, "default", ["a"]) == {"a"}  # a is used: b is now the oldest
    known.add(gen, "default", {"c"})
    assert len(known) == 2
    assert known.held(gen, "default", ["a", "b", "c"]) == {"a", "c"}
