-- IETF Resumable Uploads for HTTP (the draft beside tus): its uploads are `files` rows whose bytes are
-- appended in order like tus's, but completed by the client's Upload-Complete rather than by reaching a
-- declared length, so they get a protocol of their own (each protocol keeps to its own uploads).
ALTER TABLE files
    DROP CONSTRAINT files_protocol_check,
    ADD CONSTRAINT files_protocol_check CHECK (protocol IN ('native', 'tus', 'rufh'));
