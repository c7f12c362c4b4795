-- metric_points: `step` and `idx` stored as deltas before LZ4. In table order they grow by
-- small, mostly constant amounts from row to row, which plain LZ4 compresses poorly: 10 M
-- points of scenario 1 (8 runs, merged into one part) held 9.8 MiB of step and 21.7 MiB of
-- idx, 0.39 and 0.20 MiB with Delta: the table 98 -> ~67 MiB, `value` being the rest.
-- `epoch`, `timestamp` and `seq` stay plain (long runs of one value: smaller as they are).
-- A 1 M-point series of 8 ranks (one-part copies from the bench's chDB, alternated): 4.69
-- -> 1.31 MiB, its insert 412 -> 370 ms, its 1,000-bucket view 24.3 -> 23.2 ms (medians).
--
-- A codec change is metadata only (no mutation): parts written from now on, and parts
-- merged from old ones, use it; reads handle both. Repeating the statement changes nothing.

ALTER TABLE {db}.metric_points
    MODIFY COLUMN step Int64 CODEC(Delta, LZ4),
    MODIFY COLUMN idx UInt32 CODEC(Delta, LZ4);
