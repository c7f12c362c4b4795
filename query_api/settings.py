"""Settings of the query API (plain data; the caller builds them, nothing here reads env).

Rule: `database` is interpolated into SQL as an identifier, so it is validated here once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from query_api.errors import QueryApiError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


@dataclass(frozen=True)
class Settings:
    """How the API reads the read models.

    Args:
        database: ClickHouse database holding the read-model tables.
        project: only this project's experiments and runs are visible (None: all projects).
        max_search_results: upper bound of `max_results` in run search.
        max_history_results: upper bound of a raw metric-history page.
        max_buckets: upper bound of `n` in the downsampled view.
        query_timeout_s: `max_execution_time` of every read query.
        pointer_check_interval_s: how often the blue/green read-model pointer in
            `database` is re-read (a replay switches reads to a rebuilt database).
        consistency_timeout_s: how long a read waits for the projections to pass a
            consistency token (or the API's own latest write of a run / experiment).
        max_ingest_bytes: upper bound of one ingest body (`POST /api/v1/ingest`).
        max_artifact_bytes: upper bound of one proxied artifact upload.
        max_request_bytes: upper bound of any other request body (JSON routes); a larger
            body is refused with 413 before it is parsed (Content-Length or, for chunked
            bodies, as soon as the bytes received pass it).
        search_cache_bytes: memory for search results held by the run state they show
            (`ResultCache`: a page of held runs skips the document read); 0 turns it off.
        experiment_check_ttl_s: how long the experiment a write checked (exists, active) is
            reused by later writes (`writer.CheckedExperiments`; this process's own writes
            to it end that at once); 0: every check reads.
    """

    database: str = "runstream"
    project: str | None = None
    max_search_results: int = 50_000
    max_history_results: int = 100_000
    max_buckets: int = 10_000
    query_timeout_s: int = 30
    pointer_check_interval_s: float = 1.0
    consistency_timeout_s: float = 5.0
    max_ingest_bytes: int = 16 * 1024 * 1024
    max_artifact_bytes: int = 1024 * 1024 * 1024
    max_request_bytes: int = 16 * 1024 * 1024
    search_cache_bytes: int = 32 * 1024 * 1024
    experiment_check_ttl_s: float = 1.0

    def __post_init__(self) -> None:
        if not _IDENT.match(self.database):
            raise QueryApiError(f"database must be a plain identifier, got {self.database!r}")
        if self.search_cache_bytes < 0:
            raise QueryApiError(f"search_cache_bytes must be >= 0, got {self.search_cache_bytes}")
        if not self.experiment_check_ttl_s >= 0:
            raise QueryApiError(
                f"experiment_check_ttl_s must be >= 0, got {self.experiment_check_ttl_s}"
            )
