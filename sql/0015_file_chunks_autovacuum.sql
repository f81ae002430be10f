-- 0015 file_chunks autovacuum: chunk rows live from upload to assembly and are then deleted, so the table
-- (and its TOAST table, where the bytes are) is mostly dead space between vacuums. The default trigger,
-- 20% of the table dead, lets a table of 150 MB of live chunks hold hundreds of MB of dead ones.
-- Vacuum after a fixed number of dead rows instead: 500 chunk rows, or 20000 TOAST rows (~40 MB of data),
-- whichever comes first, so the space is reused by the next uploads rather than grown into.
ALTER TABLE file_chunks SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 500,
    toast.autovacuum_vacuum_scale_factor = 0,
    toast.autovacuum_vacuum_threshold = 20000
);
