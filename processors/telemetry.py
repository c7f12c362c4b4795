"""Prometheus metrics of a worker (one registry per worker unless one is passed).

Names: runstream_processor_{events,points,duplicates,rejected,batches,sink_retries}_total,
runstream_processor_dlq_total{reason}, runstream_processor_lag{partition} (records between
the projection's position and the partition's high watermark),
runstream_processor_sink_failing{partition} (1 while a batch's write is failing and being
retried: the worker holds its position),
runstream_processor_sink_seconds (histogram of one batch's ClickHouse write).

`ChdbCollector` adds the embedded engine's own view on every scrape (two small queries over
its system tables, ~3 ms): runstream_chdb_memory_tracked_bytes (what chDB's memory tracker
counts against `max_server_memory_usage`), runstream_chdb_jemalloc_bytes{kind=allocated|
active|resident|mapped|retained} (chDB's allocator; resident - active is mostly dirty pages
kept for reuse), runstream_chdb_cache_bytes{cache}, runstream_chdb_parts_active,
runstream_chdb_merges_running.

`HeapCollector` shows the Python side of the same process: runstream_heap_bytes{kind}
from glibc's mallinfo2 (`in_use`, `free` = freed but kept in the heap, `mmapped`) and the
Arrow memory pool (`arrow_allocated`), so RSS can be attributed without a profiler.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from processors.heap import mallinfo

log = logging.getLogger(__name__)

_CHDB_SQL = (
    "SELECT metric, toFloat64(value) FROM system.metrics WHERE metric IN ('MemoryTracking', "
    "'Merge', 'PartsActive', 'MarkCacheBytes', 'PrimaryIndexCacheBytes', "
    "'UncompressedCacheBytes', 'QueryConditionCacheBytes')"
)
#: jemalloc's summary line: "Allocated: N, active: N, metadata: N (…), resident: N, mapped: N,
#: retained: N"
_JEMALLOC = re.compile(r"\b(Allocated|active|resident|mapped|retained): (\d+)")


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = "runstream_processor_"
        self.events = Counter(p + "events", "Events projected", ["topic"], registry=r)
        self.points = Counter(p + "points", "Metric points projected", ["topic"], registry=r)
        self.duplicates = Counter(
            p + "duplicates", "Resent events dropped on event_id", ["topic"], registry=r
        )
        self.rejected = Counter(
            p + "rejected", "Conflicting event parts kept in rejected_events", ["topic"], registry=r
        )
        self.batches = Counter(p + "batches", "Batches committed", ["topic"], registry=r)
        self.retries = Counter(
            p + "sink_retries", "Failed batch writes retried", ["topic"], registry=r
        )
        self.failing = Gauge(
            p + "sink_failing",
            "1 while a batch write fails and is retried",
            ["topic", "partition"],
            registry=r,
        )
        self.dlq = Counter(
            p + "dlq", "Poison events sent to the DLQ", ["topic", "reason"], registry=r
        )
        self.lag = Gauge(p + "lag", "Records not yet projected", ["topic", "partition"], registry=r)
        self.sink_seconds = Histogram(
            p + "sink_seconds", "ClickHouse write time per batch", ["topic"], registry=r
        )


class ChdbCollector(Collector):
    """Memory, caches, parts and merges of the chDB engine this process owns (see module)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            values = {str(k): float(v) for k, v in self._client.query(_CHDB_SQL).result_rows}
            stats = self._client.query("SELECT stats FROM system.jemalloc_stats").result_rows
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail the whole page
            log.warning("chDB metrics unavailable: %s", exc)
            return
        p = "runstream_chdb_"
        if "MemoryTracking" in values:
            yield GaugeMetricFamily(
                p + "memory_tracked_bytes",
                "Memory chDB's tracker counts against max_server_memory_usage",
                value=values["MemoryTracking"],
            )
        summary = next(
            (line for line in str(stats[0][0] if stats else "").splitlines()
             if line.startswith("Allocated:")),
            "",
        )  # fmt: skip
        jemalloc = GaugeMetricFamily(p + "jemalloc_bytes", "chDB's allocator", labels=["kind"])
        for kind, number in _JEMALLOC.findall(summary):
            jemalloc.add_metric([kind.lower()], float(number))
        yield jemalloc
        caches = GaugeMetricFamily(p + "cache_bytes", "chDB cache sizes", labels=["cache"])
        for cache, key in (
            ("mark", "MarkCacheBytes"),
            ("primary_index", "PrimaryIndexCacheBytes"),
            ("uncompressed", "UncompressedCacheBytes"),
            ("query_condition", "QueryConditionCacheBytes"),
        ):
            if key in values:
                caches.add_metric([cache], values[key])
        yield caches
        for name, doc, key in (
            ("parts_active", "Active data parts of all tables", "PartsActive"),
            ("merges_running", "Background merges running", "Merge"),
        ):
            if key in values:
                yield GaugeMetricFamily(p + name, doc, value=values[key])


class HeapCollector(Collector):
    """The Python heap (glibc) and the Arrow memory pool of this process (see module)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        heap = GaugeMetricFamily(
            "runstream_heap_bytes", "Python heap (glibc) and Arrow pool", labels=["kind"]
        )
        m = mallinfo()
        if m is not None:
            heap.add_metric(["in_use"], float(m.uordblks + m.hblkhd))
            heap.add_metric(["free"], float(m.fordblks))
            heap.add_metric(["mmapped"], float(m.hblkhd))
        try:
            import pyarrow as pa

            heap.add_metric(["arrow_allocated"], float(pa.total_allocated_bytes()))
        except ImportError:
            pass
        yield heap
