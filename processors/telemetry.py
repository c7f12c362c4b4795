"""Prometheus metrics of a worker (one registry per worker unless one is passed).

Names: runstream_processor_{events,points,duplicates,rejected,batches,sink_retries}_total,
runstream_processor_dlq_total{reason}, runstream_processor_lag{partition} (records between
the projection's position and the partition's high watermark),
runstream_processor_sink_failing{partition} (1 while a batch's write is failing and being
retried: the worker holds its position),
runstream_processor_sink_seconds (histogram of one batch's ClickHouse write).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
