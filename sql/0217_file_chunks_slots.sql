-- 0217 file_chunks in 16 slots (LIST partitions), so a finished file's chunks can go by TRUNCATE of its
-- slot instead of DELETE + VACUUM of every TOAST tuple.
--
-- Why: a completed 1 GiB file is ~540,000 TOAST tuples. Deleting them marks each one dead (a WAL record per
-- tuple, every page dirtied again and written out later), and autovacuum then reads, prunes and rewrites
-- every page once more: bench/compare.py --pg-detail measured 1.7-2.3 CPU-s per GiB in autovacuum alone on
-- top of the backends, for a target of 4 for everything. TRUNCATE drops the relation's files and its dirty
-- buffers unwritten, whatever its size.
--
-- How: a file's rows go to the slot chunk_slot(file_id), a fixed function of its id, so (file_id,
-- chunk_index, slot) is unique exactly when (file_id, chunk_index) is and native chunk PUTs keep their
-- ON CONFLICT. remove_file_chunks(file_id) truncates each slot holding only that file's rows and deletes
-- the rest (a slot shared with another upload, or busy past a short lock timeout): two uploads share a
-- slot 1 time in 16. tus concatenation renames the partials' rows without moving them (their slot stays
-- the partials'), so a final's rows may be in several slots: remove_file_chunks looks at every slot that
-- holds them. Sixteen, not one per upload: no DDL per upload, and a statement on the parent that cannot
-- prune (a generic plan, a query by file_id) locks every partition, which stays cheap at 16.
CREATE FUNCTION chunk_slot(file_id text) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN get_byte(decode(md5(file_id), 'hex'), 0) % 16;

ALTER TABLE file_chunks RENAME TO file_chunks_unslotted;
-- Its constraints' names go to the new table (the old one is dropped below).
ALTER TABLE file_chunks_unslotted DROP CONSTRAINT file_chunks_pkey;
ALTER TABLE file_chunks_unslotted DROP CONSTRAINT file_chunks_file_id_chunk_index_key;
ALTER TABLE file_chunks_unslotted DROP CONSTRAINT file_chunks_file_id_fkey;
ALTER TABLE file_chunks_unslotted DROP CONSTRAINT file_chunks_chunk_index_check;

CREATE TABLE file_chunks (
    file_id     TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL CHECK (chunk_index >= 0),
    -- chunk_slot(file_id) when stored; a row renamed by tus concatenation keeps its partial's slot.
    -- The default keeps hand-written inserts (tests, repairs) working; chunkd always names it.
    slot        SMALLINT NOT NULL DEFAULT 0,
    data        BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, chunk_index, slot)
) PARTITION BY LIST (slot);
-- Media does not compress: TOAST compression would only burn CPU on every chunk (as in 0001).
ALTER TABLE file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Each slot vacuums as 0015 and 0216 had file_chunks vacuum (for the rows deleted, not truncated).
DO $$
BEGIN
    FOR s IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE file_chunks_%s PARTITION OF file_chunks FOR VALUES IN (%s) WITH ('
            'autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500, '
            'autovacuum_vacuum_cost_delay = 0, autovacuum_vacuum_insert_threshold = -1, '
            'toast.autovacuum_vacuum_scale_factor = 0, toast.autovacuum_vacuum_threshold = 20000, '
            'toast.autovacuum_vacuum_cost_delay = 0, toast.autovacuum_vacuum_insert_threshold = -1)',
            s,
            s
        );
    END LOOP;
END
$$;

INSERT INTO file_chunks (file_id, chunk_index, slot, data, created_at)
SELECT file_id, chunk_index, chunk_slot(file_id), data, created_at FROM file_chunks_unslotted;
DROP TABLE file_chunks_unslotted;

-- A file's chunks, once its blob is durable: each slot holding only this file's rows is truncated (its
-- files dropped, no dead tuple, no vacuum), the rest deleted. TRUNCATE waits for every statement on the
-- slot, and new ones queue behind it: it waits at most 100 ms, then the rows of that slot are deleted
-- instead. TRUNCATE is not MVCC-safe: a transaction whose snapshot is older than it sees the slot empty;
-- chunkd's only such reader, `chunkd backup`, locks file_chunks before taking its snapshot (so this falls
-- back to DELETE while a backup runs). Returns the number of slots truncated.
CREATE FUNCTION remove_file_chunks(target TEXT) RETURNS INTEGER
    LANGUAGE plpgsql AS $$
DECLARE
    waited CONSTANT TEXT := current_setting('lock_timeout');
    parts CONSTANT REGCLASS[] := ARRAY(
        SELECT DISTINCT c.tableoid::regclass FROM file_chunks c WHERE c.file_id = target ORDER BY 1
    );  -- first, all of them: a slot cannot be truncated while a query of this session still reads it
    part REGCLASS;
    shared BOOLEAN;
    truncated INTEGER := 0;
BEGIN
    FOREACH part IN ARRAY parts LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '100ms', true);
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', part);
            PERFORM set_config('lock_timeout', waited, true);
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE file_id <> $1)', part) INTO shared USING target;
            IF NOT shared THEN
                EXECUTE format('TRUNCATE %s', part);
                truncated := truncated + 1;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM set_config('lock_timeout', waited, true);
        END;
    END LOOP;
    DELETE FROM file_chunks WHERE file_id = target;
    RETURN truncated;
END
$$;
