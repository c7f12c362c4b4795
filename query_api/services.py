"""The per-app bundle (settings, store, repositories, writers), reached by routes through the
request, and scoped per request to the caller's project.

Rule: `services(request)` authenticates the caller first; every repository it hands out is
built for the caller's project (a token of project A never reads project B), and so is the
`Writer`: what a route writes carries the caller's project.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request

from query_api.artifacts import BlobStore
from query_api.auth import Authenticator, Principal
from query_api.consistency import Projections, WriteMarks
from query_api.errors import PermissionDenied
from query_api.eventlog import EventLog, NoEventLog, Stamp
from query_api.repository import (
    ClientFactory,
    ExperimentRepository,
    MetricRepository,
    ReadStore,
    RunRepository,
)
from query_api.repository.leaderboard import LeaderboardRepository
from query_api.repository.runs import ResultCache
from query_api.repository.summaries import KnownRuns, require_runs
from query_api.settings import Settings
from query_api.writer import CheckedExperiments, RunDirectory, Writer

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Shared:
    """What every request of one app shares."""

    settings: Settings
    store: ReadStore
    auth: Authenticator
    log: EventLog
    stamp: Stamp
    marks: WriteMarks
    projections: Projections
    blobs: BlobStore | None
    runs: RunDirectory
    checked_experiments: CheckedExperiments
    results: ResultCache | None
    known_runs: KnownRuns

    @classmethod
    def build(
        cls,
        settings: Settings,
        factory: ClientFactory,
        *,
        log: EventLog | None = None,
        blobs: BlobStore | None = None,
        require_tokens: bool | None = None,
    ) -> Shared:
        store = ReadStore(
            factory, settings.database, settings.query_timeout_s, settings.pointer_check_interval_s
        )
        log = log or NoEventLog()
        cache = settings.search_cache_bytes
        return cls(
            settings=settings,
            store=store,
            auth=Authenticator(
                store, require_tokens=require_tokens, default_project=settings.project
            ),
            log=log,
            stamp=Stamp(),
            marks=WriteMarks(),
            projections=Projections(store, log.topic, settings.consistency_timeout_s),
            blobs=blobs,
            runs=RunDirectory(),
            checked_experiments=CheckedExperiments(settings.experiment_check_ttl_s),
            results=ResultCache(cache) if cache else None,
            known_runs=KnownRuns(),
        )


@dataclass(frozen=True)
class Services:
    settings: Settings
    principal: Principal
    shared: Shared
    experiments: ExperimentRepository
    runs: RunRepository
    metrics: MetricRepository
    leaderboard: LeaderboardRepository

    @classmethod
    def scoped(cls, shared: Shared, principal: Principal) -> Services:
        settings = dataclasses.replace(shared.settings, project=principal.project)
        store = shared.store
        return cls(
            settings=settings,
            principal=principal,
            shared=shared,
            experiments=ExperimentRepository(store, settings.project),
            runs=RunRepository(store, settings.project, shared.results),
            metrics=MetricRepository(store),
            leaderboard=LeaderboardRepository(store, settings.project),
        )

    @property
    def write_project(self) -> str:
        """The project of the events this caller writes."""
        return self.principal.project or DEFAULT_PROJECT

    @property
    def writer(self) -> Writer:
        return Writer(self.shared.log, self.shared.stamp, self.shared.marks, self.write_project)

    def require_runs(self, run_ids: Sequence[str]) -> None:
        """RunNotFound for the first of `run_ids` not in the caller's project."""
        require_runs(self.shared.store, run_ids, self.settings.project, self.shared.known_runs)

    def wait_for(self, keys: list[str], token: str | None = None) -> None:
        """Read-your-writes: wait for this process's writes of `keys` (and a token's)."""
        from query_api.consistency import decode_token, merge

        wanted = self.shared.marks.of(keys)
        if token:
            merge(wanted, decode_token(token).items())
        self.shared.projections.wait(wanted)


def services(request: Request) -> Services:
    """FastAPI dependency: the app's services, scoped to the authenticated caller."""
    shared: Shared = request.app.state.shared
    principal = shared.auth.principal(request.headers.get("authorization"))
    svc = Services.scoped(shared, principal)
    token = request.query_params.get("consistency") or request.headers.get(
        "x-runstream-consistency"
    )
    if token:
        svc.wait_for([], token)
    return svc


def operator(request: Request) -> Services:
    """FastAPI dependency of the admin routes: `services`, and the caller must be an operator
    (an operator token; anyone in open mode); 403 otherwise."""
    svc = services(request)
    if not svc.principal.operator:
        raise PermissionDenied(
            "this route needs an operator token (runstream token issue --operator)"
        )
    return svc
