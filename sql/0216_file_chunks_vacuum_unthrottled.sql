-- 0216 file_chunks autovacuum without the cost delay: a completed file's chunks are deleted at once
-- (~540,000 TOAST tuples per GiB), and a throttled autovacuum (2 ms of sleep per 200 cost units)
-- took minutes per GiB, so the next uploads found no free space and grew the TOAST table by every
-- byte they stored, with each GiB costing PostgreSQL more than the last (bench/compare.py --pg-detail).
-- Insert-triggered vacuums only freeze chunk pages that are deleted soon: off.
ALTER TABLE file_chunks SET (
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_vacuum_insert_threshold = -1,
    toast.autovacuum_vacuum_cost_delay = 0,
    toast.autovacuum_vacuum_insert_threshold = -1
);
