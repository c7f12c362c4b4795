-- Read models of runstream.events.v1. Contract for the query API: see processors/README.md.
-- Every table is keyed on its row identity (ReplacingMergeTree / AggregatingMergeTree) AND
-- every insert carries a deterministic insert_deduplication_token (hence the window setting):
-- a redelivered batch is a no-op, a client resend is dropped by event_id before insert.

CREATE TABLE IF NOT EXISTS {db}.events
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    event_id String,
    event_type LowCardinality(String),
    producer_id String,
    seq UInt64,
    occurred_at DateTime64(3, 'UTC'),
    log_partition UInt32,
    log_offset UInt64,
    log_time DateTime64(3, 'UTC'),
    payload String,
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, log_partition, log_offset)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.experiments
(
    project LowCardinality(String),
    experiment_id String,
    name String,
    description String,
    tags Map(String, String),
    deleted UInt8,
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    created_event_id String,
    event_id String,
    log_partition UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project, experiment_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.experiment_versions AS {db}.experiments
ENGINE = ReplacingMergeTree
ORDER BY (experiment_id, version)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.runs
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    name String,
    notes String,
    status LowCardinality(String),
    status_reason String,
    start_time DateTime64(3, 'UTC'),
    end_time Nullable(DateTime64(3, 'UTC')),
    deleted UInt8,
    parent_run_id Nullable(String),
    fork_step Nullable(Int64),
    cloned_from_run_id Nullable(String),
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    created_event_id String,
    event_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project, experiment_id, run_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.run_versions AS {db}.runs
ENGINE = ReplacingMergeTree
ORDER BY (run_id, version)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.producers
(
    project LowCardinality(String),
    run_id String,
    producer_id String,
    host String,
    pid Int64,
    rank Int64,
    world_size Int64,
    status LowCardinality(String),
    reason String,
    joined_at Nullable(DateTime64(3, 'UTC')),
    exited_at Nullable(DateTime64(3, 'UTC')),
    last_seq UInt64,
    last_seen_at DateTime64(3, 'UTC'),
    event_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (run_id, producer_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.producer_versions AS {db}.producers
ENGINE = ReplacingMergeTree
ORDER BY (run_id, producer_id, version)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.params
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    key String,
    value String,
    occurred_at DateTime64(3, 'UTC'),
    event_id String,
    log_offset UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, key)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.tags
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    key String,
    value String,
    deleted UInt8,
    occurred_at DateTime64(3, 'UTC'),
    event_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (run_id, key)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.attributes
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    key String,
    value String,
    occurred_at DateTime64(3, 'UTC'),
    event_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (run_id, key)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.metric_points
(
    run_id LowCardinality(String),
    key LowCardinality(String),
    split LowCardinality(String),
    step Int64,
    epoch Int64,
    timestamp DateTime64(3, 'UTC'),
    value Float64,
    producer_id LowCardinality(String),
    seq UInt64,
    idx UInt32
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, key, split, step, producer_id, seq, idx)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.metric_summary
(
    project LowCardinality(String),
    experiment_id String,
    key LowCardinality(String),
    split LowCardinality(String),
    run_id String,
    count SimpleAggregateFunction(sum, UInt64),
    sum_value SimpleAggregateFunction(sum, Float64),
    min_value SimpleAggregateFunction(min, Float64),
    max_value SimpleAggregateFunction(max, Float64),
    min_step SimpleAggregateFunction(min, Int64),
    max_step SimpleAggregateFunction(max, Int64),
    last SimpleAggregateFunction(max, Tuple(step Int64, timestamp DateTime64(3, 'UTC'),
        log_offset UInt64, idx UInt32, value Float64))
)
ENGINE = AggregatingMergeTree
ORDER BY (project, experiment_id, key, split, run_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.artifacts
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    key String,
    uri String,
    size Int64,
    sha256 String,
    content_type String,
    kind LowCardinality(String),
    step Nullable(Int64),
    metadata Map(String, String),
    deleted UInt8,
    occurred_at DateTime64(3, 'UTC'),
    event_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (run_id, key)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.artifact_versions AS {db}.artifacts
ENGINE = ReplacingMergeTree
ORDER BY (run_id, key, version)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.lineage
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    direction LowCardinality(String),
    kind LowCardinality(String),
    name String,
    version String,
    digest String,
    source_uri String,
    context String,
    metadata Map(String, String),
    occurred_at DateTime64(3, 'UTC'),
    event_id String,
    row_version UInt64
)
ENGINE = ReplacingMergeTree(row_version)
ORDER BY (run_id, direction, kind, name, version)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    event_id String,
    rule_id String,
    key String,
    op String,
    threshold Float64,
    value Float64,
    step Nullable(Int64),
    text String,
    level LowCardinality(String),
    occurred_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.rejected_events
(
    project LowCardinality(String),
    experiment_id String,
    run_id String,
    event_id String,
    event_type LowCardinality(String),
    reason LowCardinality(String),
    item String,
    detail String,
    winner_event_id String,
    occurred_at DateTime64(3, 'UTC'),
    log_partition UInt32,
    log_offset UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, event_id, reason, item)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.projection_position
(
    topic String,
    log_partition UInt32,
    first_offset UInt64,
    last_offset UInt64,
    state UInt8,
    events UInt32,
    updated_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(state)
ORDER BY (topic, log_partition, first_offset);

CREATE TABLE IF NOT EXISTS {db}.read_models_pointer
(
    name String,
    database String,
    switched_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(switched_at)
ORDER BY name
