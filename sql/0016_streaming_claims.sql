-- Workers look every second for an UPLOADING file to assemble while it arrives (service/streaming.py):
-- this keeps that look to the few unheld uploads instead of a scan of every file.
CREATE INDEX idx_files_uploading_unheld ON files (created_at) WHERE status = 'UPLOADING' AND worker_id IS NULL;
