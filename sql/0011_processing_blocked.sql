-- A file whose processing is held back by its environment (a full, read-only or failing disk, a missing
-- STORAGE_DIR, an unreachable store) stays PROCESSING with its chunks: blocked_reason says why (the label
-- of chunkd_processing_blocked), blocked_retries how many backoff steps it has taken (the worker doubles
-- its wait at each). Both are cleared when the file is finished, fails or fails transiently.
ALTER TABLE files
    ADD COLUMN blocked_reason  TEXT,
    ADD COLUMN blocked_retries INTEGER NOT NULL DEFAULT 0;
CREATE INDEX idx_files_blocked ON files (blocked_reason) WHERE blocked_reason IS NOT NULL;

-- API paths are computed by the views (/api/files/{id}/content, .../thumbnail), never stored.
ALTER TABLE files DROP COLUMN url, DROP COLUMN thumbnail;
