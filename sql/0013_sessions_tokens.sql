-- Accounts for real apps (issue 13): a session per device, API tokens, login throttling, quotas and
-- webhooks with an outbox written by the same transaction as a file's status change.

-- One row per login (device). The refresh token names its session; only the current token's SHA-256
-- is kept. A revoked session stays (revoked_at set) so that a replayed token of it is recognised as
-- reuse rather than as garbage; rows past their expiry are removed by `chunkd cleanup`.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device       TEXT NOT NULL,
    ip           TEXT,
    refresh_hash TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ,
    revoked_why  TEXT
);
CREATE INDEX idx_sessions_user_live ON sessions(user_id) WHERE revoked_at IS NULL;

-- The seed's users.refresh_token held one session per user. Its sessions are carried over with the
-- user's id as the session id: a refresh token issued before this migration (`<user id>.<expiry>...`)
-- then names its session and keeps working. The column stays (it is the seed's schema) but nothing
-- writes it any more.
INSERT INTO sessions (id, user_id, device, refresh_hash, expires_at)
SELECT id, id, 'session from before sessions', refresh_token, now() + interval '30 days'
  FROM users WHERE refresh_token IS NOT NULL;
UPDATE users SET refresh_token = NULL WHERE refresh_token IS NOT NULL;
COMMENT ON COLUMN users.refresh_token IS 'unused since 0013: sessions.refresh_hash holds refresh tokens';

-- API tokens for scripts and servers: `ckd_...`, shown once, only the SHA-256 kept.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT UNIQUE NOT NULL,
    scopes       TEXT[] NOT NULL CHECK (scopes <@ ARRAY['read', 'upload', 'admin'] AND cardinality(scopes) > 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX idx_api_tokens_user ON api_tokens(user_id, created_at);

-- Failed logins, per account (`email:<address>`) and per client address (`ip:<address>`), counted
-- over a sliding window; old rows are deleted as new ones are written. An attempt is written before
-- its password is checked and removed if it succeeds, so a burst of concurrent attempts cannot all
-- pass the count.
CREATE TABLE login_failures (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key        TEXT NOT NULL,
    failed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_login_failures_key ON login_failures(key, failed_at);

-- Quotas: NULL follows USER_QUOTA.
ALTER TABLE users ADD COLUMN quota_bytes BIGINT CHECK (quota_bytes >= 0);

-- Webhooks. `all_users` (admins only) hears every user's files, otherwise the owner's own.
CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    url           TEXT NOT NULL,
    events        TEXT[] NOT NULL,
    all_users     BOOLEAN NOT NULL DEFAULT false,
    description   TEXT,
    secret        TEXT NOT NULL,            -- whsec_...: the receiver needs it in clear to check signatures
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    failing_since TIMESTAMPTZ,              -- first failure since the last success
    disabled_at   TIMESTAMPTZ               -- after a day of failures
);
CREATE INDEX idx_webhooks_user ON webhooks(user_id);

-- The outbox: one row per (webhook, event), written by the triggers below in the transaction that
-- changes the file, and delivered (at least once) by the worker.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,   -- webhook-id: the same on every retry
    webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_type       TEXT NOT NULL,
    payload          JSONB NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_until     TIMESTAMPTZ,
    last_attempt_at  TIMESTAMPTZ,
    last_status_code INTEGER,
    last_error       TEXT,
    delivered_at     TIMESTAMPTZ
);
CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX idx_webhook_deliveries_webhook ON webhook_deliveries(webhook_id, created_at DESC);

CREATE FUNCTION enqueue_file_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    event TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.tus_concat = 'partial' THEN
            RETURN NEW;  -- a piece of a future upload, not an upload of its own
        END IF;
        event := 'upload.created';
    ELSIF NEW.status = 'COMPLETED' THEN
        event := 'file.completed';
    ELSIF NEW.status = 'FAILED' THEN
        event := 'file.failed';
    ELSE
        RETURN NEW;
    END IF;
    INSERT INTO webhook_deliveries (webhook_id, event_type, payload)
    SELECT w.id, event, jsonb_build_object(
               'type', event, 'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object('id', NEW.id, 'status', NEW.status, 'type', NEW.type,
                                         'mimetype', NEW.mimetype, 'size', NEW.size,
                                         'original_name', NEW.original_name, 'error', NEW.error,
                                         'sha256', NEW.metadata->>'sha256', 'uploaded_by_id', NEW.uploaded_by_id,
                                         'post_id', NEW.post_id))
      FROM webhooks w
     WHERE w.disabled_at IS NULL AND event = any(w.events)
       AND (w.user_id = NEW.uploaded_by_id OR w.all_users);
    IF FOUND THEN
        PERFORM pg_notify('webhook_deliveries', NEW.id);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER files_created_event AFTER INSERT ON files
    FOR EACH ROW EXECUTE FUNCTION enqueue_file_event();
CREATE TRIGGER files_status_event AFTER UPDATE OF status ON files
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION enqueue_file_event();
