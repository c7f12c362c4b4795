-- A producer's current state is the newest row of producer_versions (version = the log
-- offset of its latest event; read `ORDER BY version DESC LIMIT 1 BY run_id, producer_id`).
-- `producers` held that same row a second time: one more part for nearly every batch (a
-- small batch's cost is mostly its parts), and a second table to keep equal to the first.
DROP TABLE IF EXISTS {db}.producers;
