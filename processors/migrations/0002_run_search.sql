-- run_search: one row per run for run search (query_api/repository/runs.py), so a search is
-- one read of one table instead of joins over runs, params, tags and metric_summary.
-- Each projection batch adds one partial row per run it touched (the run's state, the params,
-- tags and metric summaries of the batch); the engine merges them column by column:
--   run        max of (version, ...): the latest state, as `runs FINAL`
--   run_state  max of version * 2 + deleted: 0 = no run state in the row, odd = deleted
--              (what every search tests, in one narrow column instead of the tuple)
--   params     maxMap: params are first-wins in the projection, one value per key
--   tags       maxMap of (version, deleted, value): the latest set/delete, as `tags FINAL`
--   m_*        per metric (map key = metric key encoded with its split, see
--              processors/projection/context.py `metric_map_key`): sum of count and sum,
--              min/max of value and step, max of the `last` tuple: as `metric_summary FINAL`.
-- Rows are filed under the run's project and experiment as of the batch (metric summaries
-- are, too); a row without a run state (metrics before RunCreated) has run.version = 0 and
-- search skips it, as the join on `runs` did.

CREATE TABLE IF NOT EXISTS {db}.run_search
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    run SimpleAggregateFunction(max, Tuple(version UInt64, name String, status String,
        status_reason String, start_time DateTime64(3, 'UTC'),
        end_time Nullable(DateTime64(3, 'UTC')), deleted UInt8, notes String,
        parent_run_id Nullable(String), fork_step Nullable(Int64),
        cloned_from_run_id Nullable(String))),
    run_state SimpleAggregateFunction(max, UInt64),
    params SimpleAggregateFunction(maxMap, Map(String, String)),
    tags SimpleAggregateFunction(maxMap, Map(String, Tuple(version UInt64, deleted UInt8,
        value String))),
    m_last SimpleAggregateFunction(maxMap, Map(String, Tuple(step Int64,
        timestamp DateTime64(3, 'UTC'), log_offset UInt64, idx UInt32, value Float64))),
    m_count SimpleAggregateFunction(sumMap, Map(String, UInt64)),
    m_sum SimpleAggregateFunction(sumMap, Map(String, Float64)),
    m_min SimpleAggregateFunction(minMap, Map(String, Float64)),
    m_max SimpleAggregateFunction(maxMap, Map(String, Float64)),
    m_min_step SimpleAggregateFunction(minMap, Map(String, Int64)),
    m_max_step SimpleAggregateFunction(maxMap, Map(String, Int64))
)
ENGINE = AggregatingMergeTree
ORDER BY (project, experiment_id, run_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Backfill from the tables this one summarises (a database migrated before run_search
-- existed). Each INSERT carries a fixed deduplication token: a migration interrupted after
-- an INSERT and run again does not add its sums twice.
INSERT INTO {db}.run_search (project, experiment_id, run_id, run, run_state)
SELECT project, experiment_id, run_id,
    tuple(version, name, toString(status), status_reason, start_time, end_time, deleted, notes,
        parent_run_id, fork_step, cloned_from_run_id),
    version * 2 + deleted
FROM {db}.runs FINAL
ORDER BY project, experiment_id, run_id
SETTINGS insert_deduplication_token = '0002_run_search:runs';

INSERT INTO {db}.run_search (project, experiment_id, run_id, params)
SELECT if(r.run_id = '', p.project, r.project), if(r.run_id = '', p.experiment_id, r.experiment_id),
    p.run_id, mapFromArrays(groupArray(p.key), groupArray(p.value))
FROM {db}.params AS p
LEFT JOIN (SELECT project, experiment_id, run_id FROM {db}.runs FINAL) AS r ON r.run_id = p.run_id
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
SETTINGS insert_deduplication_token = '0002_run_search:params', join_use_nulls = 0;

INSERT INTO {db}.run_search (project, experiment_id, run_id, tags)
SELECT if(r.run_id = '', t.project, r.project), if(r.run_id = '', t.experiment_id, r.experiment_id),
    t.run_id, mapFromArrays(groupArray(t.key), groupArray(tuple(t.version, t.deleted, t.value)))
FROM (SELECT * FROM {db}.tags FINAL) AS t
LEFT JOIN (SELECT project, experiment_id, run_id FROM {db}.runs FINAL) AS r ON r.run_id = t.run_id
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
SETTINGS insert_deduplication_token = '0002_run_search:tags', join_use_nulls = 0;

INSERT INTO {db}.run_search
    (project, experiment_id, run_id, m_last, m_count, m_sum, m_min, m_max, m_min_step, m_max_step)
SELECT project, experiment_id, run_id,
    mapFromArrays(groupArray(k), groupArray(last)),
    mapFromArrays(groupArray(k), groupArray(count)),
    mapFromArrays(groupArray(k), groupArray(sum_value)),
    mapFromArrays(groupArray(k), groupArray(min_value)),
    mapFromArrays(groupArray(k), groupArray(max_value)),
    mapFromArrays(groupArray(k), groupArray(min_step)),
    mapFromArrays(groupArray(k), groupArray(max_step))
FROM (
    SELECT *, concat(toString(lengthUTF8(key)), ':', key, split) AS k
    FROM {db}.metric_summary FINAL
)
GROUP BY project, experiment_id, run_id
ORDER BY project, experiment_id, run_id
SETTINGS insert_deduplication_token = '0002_run_search:metric_summary'
