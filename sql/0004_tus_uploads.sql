-- tus 1.0 uploads live in `files` like native ones; these columns hold what only tus needs.
-- `protocol` keeps each protocol off the other's uploads: tus appends variable-length chunks
-- in order, the native protocol addresses fixed-size chunks by index.

ALTER TABLE files
    ADD COLUMN protocol     TEXT NOT NULL DEFAULT 'native' CHECK (protocol IN ('native', 'tus')),
    ADD COLUMN tus_metadata TEXT,           -- Upload-Metadata exactly as sent, echoed by HEAD
    ADD COLUMN tus_concat   TEXT CHECK (tus_concat IN ('partial', 'final')),
    ADD COLUMN tus_parts    TEXT[];         -- a final upload's partial upload ids, in order
