-- Every change of a file's status is announced on channel `file_status` (payload:
-- {"id", "status"}), whoever makes it: the native protocol, tus, the worker, an admin's
-- SQL. Long-polls and server-sent events wait on it; the NOTIFY is sent on commit.
CREATE FUNCTION notify_file_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('file_status', json_build_object('id', OLD.id, 'status', NULL)::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('file_status', json_build_object('id', NEW.id, 'status', NEW.status)::text);
    RETURN NEW;
END $$;

CREATE TRIGGER files_status_notify AFTER UPDATE OF status ON files
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION notify_file_status();
CREATE TRIGGER files_deleted_notify AFTER DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION notify_file_status();

-- GET /api/files lists a user's files newest first.
CREATE INDEX idx_files_uploaded_by_created ON files(uploaded_by_id, created_at DESC);
