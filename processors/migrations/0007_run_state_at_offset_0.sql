-- run_search.run_state was `version * 2 + deleted` (migration 0002, and the projection until
-- it moved to `(version + 1) * 2 + deleted`): a run whose latest state is its event at log
-- offset 0 (the first record of a partition, version 0) has run_state 0 there, the value of
-- "no run state in this row", and every search leaves it out until the run changes.
-- One partial row per such run gives it the lowest run state, 2 + deleted, which any later
-- state outranks. Its other columns lose every merge (a version-0 run tuple with empty
-- strings, empty maps), and its touches grow by one: the run's search document is then
-- stale and the run is read from run_search until the processors next write it.
-- A fixed deduplication token: the statement run again after a crash adds nothing.

INSERT INTO {db}.run_search (project, experiment_id, run_id, run_state)
SELECT project, experiment_id, run_id, 2 + deleted
FROM {db}.runs FINAL
WHERE version = 0
SETTINGS insert_deduplication_token = '0007_run_state_at_offset_0';
