-- run_page: each run's `run_search` row merged into one JSON document, so a search page
-- (100 runs picked by primary key among 100 k) reads one String column instead of the
-- ~48 column streams of `run_search` (one granule of each per run: 33 of the 43 ms a page
-- took at 100 k runs). A cache, never the truth:
--   touches    `run_search` gains a counter: every partial row counts 1 (the column's
--              DEFAULT: rows from before this migration and rows of writers that do not
--              know the column count too), so its sum changes whenever a run's row does
--              (redeliveries are deduplicated like every other insert).
--   run_page   written from `run_page_source` (the view below: `run_search FINAL` as
--              documents) by the processors after their batches (processors/sink.py
--              `refresh_pages`), versioned by the `touches` it was built from.
-- A search reads the page's docs without FINAL, keeps each run's highest version and uses it
-- only if that equals the run's current `touches` (which the page-key query returns);
-- any other run of the page is read from `run_search` as before (query_api/repository/runs.py).
--
-- Granules of 64 rows: a page's 100 runs are scattered over the table, each costs its
-- granule (~45 KB of documents at 64 rows); 100 runs among 100 k read in 13 ms, 30 ms with
-- 1,024-row granules (the whole table).
--
-- The document: a JSON array [run, params, tags, m_last, m_count, m_sum, m_min, m_max,
-- m_min_step, m_max_step] of the merged columns, times as epoch milliseconds, integers
-- unquoted, non-finite floats as "nan"/"inf"/"-inf" (the view's SETTINGS hold the format).
-- Whole columns only: under FINAL, `run.status` (a subcolumn) is read from one partial row,
-- not the merged one (query_api/search/compile.py, rule on subcolumns); `tupleElement(run,
-- 'status')` of the merged column is right. The view's filter on key columns (project, experiment_id, run_id) goes to PREWHERE under
-- FINAL (`optimize_move_to_prewhere_if_final`): exact for sorting-key columns, and 15 instead
-- of 86 ms for one run among 100 k.

ALTER TABLE {db}.run_search ADD COLUMN IF NOT EXISTS touches SimpleAggregateFunction(sum, UInt64) DEFAULT 1;

CREATE VIEW IF NOT EXISTS {db}.run_page_source AS
SELECT project, experiment_id, run_id, touches,
    toJSONString(tuple(
        CAST(tuple(tupleElement(run, 'version'), tupleElement(run, 'name'),
                tupleElement(run, 'status'), tupleElement(run, 'status_reason'),
                toUnixTimestamp64Milli(tupleElement(run, 'start_time')),
                toUnixTimestamp64Milli(tupleElement(run, 'end_time')),
                tupleElement(run, 'deleted'), tupleElement(run, 'notes'),
                tupleElement(run, 'parent_run_id'), tupleElement(run, 'fork_step'),
                tupleElement(run, 'cloned_from_run_id')),
            'Tuple(version UInt64, name String, status String, status_reason String, start_time Int64, end_time Nullable(Int64), deleted UInt8, notes String, parent_run_id Nullable(String), fork_step Nullable(Int64), cloned_from_run_id Nullable(String))'),
        params,
        tags,
        mapApply((k, v) -> (k, CAST(tuple(tupleElement(v, 'step'),
                toUnixTimestamp64Milli(tupleElement(v, 'timestamp')), tupleElement(v, 'log_offset'),
                tupleElement(v, 'idx'), tupleElement(v, 'value')),
                'Tuple(step Int64, timestamp Int64, log_offset UInt64, idx UInt32, value Float64)')),
            m_last),
        m_count, m_sum, m_min, m_max, m_min_step, m_max_step)) AS doc
FROM {db}.run_search FINAL
SETTINGS output_format_json_quote_64bit_integers = 0, output_format_json_quote_denormals = 1,
    output_format_json_named_tuples_as_objects = 1, optimize_move_to_prewhere_if_final = 1;

CREATE TABLE IF NOT EXISTS {db}.run_page
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    touches UInt64,
    doc String
)
ENGINE = ReplacingMergeTree(touches)
ORDER BY (project, experiment_id, run_id)
SETTINGS index_granularity = 64;

INSERT INTO {db}.run_page SELECT project, experiment_id, run_id, touches, doc
FROM {db}.run_page_source
