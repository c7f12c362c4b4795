-- metric_rollup: per-series aggregates of fixed step blocks, so a bucket view of a long
-- series reads a few rows per bucket instead of every point (query_api/repository/
-- metrics.py). Level l covers the steps [block * 2^s, (block + 1) * 2^s - 1] with
-- s = 5, 9, 13 (32, 512 and 8,192 steps; `schemas.metrics.ROLLUP_SHIFTS`).
-- Each projection batch adds one partial row per (series, level, block) it has points in,
-- built from exactly the points it inserts into metric_points (processors/projection/
-- metrics.py `_rollup`); the engine merges partial rows column by column:
--   count, sum_value              sum
--   min_value, max_value          min / max (NaN only when every value is NaN)
--   min_step                      min
--   last                          max of (step, seq << 20 + idx, producer, value): the
--                                 point that is last by (step, seq, idx), the bucket view's
--                                 `last` order (its step is the block's largest), ties of
--                                 ranks by producer id (the same row whatever the batches)
-- Like metric_summary it is never fed by a materialized view (redeliveries would count
-- twice); always aggregate it.

CREATE TABLE IF NOT EXISTS {db}.metric_rollup
(
    run_id LowCardinality(String),
    key LowCardinality(String),
    split LowCardinality(String),
    level UInt8,
    block Int64,
    count SimpleAggregateFunction(sum, UInt64),
    sum_value SimpleAggregateFunction(sum, Float64),
    min_value SimpleAggregateFunction(min, Float64),
    max_value SimpleAggregateFunction(max, Float64),
    min_step SimpleAggregateFunction(min, Int64),
    last SimpleAggregateFunction(max, Tuple(step Int64, order UInt64, producer String,
        value Float64))
)
ENGINE = AggregatingMergeTree
ORDER BY (run_id, key, split, level, block)
SETTINGS non_replicated_deduplication_window = 10000;

-- Backfill from the points of a database migrated before this table existed, every level
-- in one statement with a fixed deduplication token (a migration interrupted after it and
-- run again does not add its sums twice).
INSERT INTO {db}.metric_rollup
SELECT run_id, key, split, lv.1 AS level, intDiv(step - positiveModulo(step, lv.2), lv.2) AS block,
    count(), sum(value), min(value), max(value), min(step),
    max(tuple(step, bitShiftLeft(seq, 20) + idx, toString(producer_id), value))
FROM {db}.metric_points
ARRAY JOIN [(0, 32), (1, 512), (2, 8192)] AS lv
GROUP BY run_id, key, split, level, block
SETTINGS insert_deduplication_token = '0005_metric_rollup'
