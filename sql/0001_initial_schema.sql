-- The seed's schema (database-guide.md § Database Schema and § Indexing Strategy), with
-- DESIGN.md's deliberate improvements and the columns the upload protocols need.
-- Plain CREATE INDEX, not CONCURRENTLY: the tables are new and empty, and each
-- migration runs in one transaction, where CONCURRENTLY is not allowed.

CREATE TYPE user_role AS ENUM ('USER', 'ADMIN');
CREATE TYPE file_type AS ENUM ('IMAGE', 'DOCUMENT', 'VIDEO', 'AUDIO', 'OTHER');
CREATE TYPE file_status AS ENUM ('UPLOADING', 'PROCESSING', 'COMPLETED', 'FAILED');

-- updated_at is kept by the database, whoever writes the row.
CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TABLE users (
    id            TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    email         TEXT UNIQUE NOT NULL,
    password      TEXT NOT NULL,
    name          TEXT,
    role          user_role NOT NULL DEFAULT 'USER',
    is_active     BOOLEAN NOT NULL DEFAULT true,
    refresh_token TEXT,                         -- SHA-256 of the current refresh token, never the token
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE posts (
    id         TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    title      TEXT NOT NULL,
    content    TEXT,
    published  BOOLEAN NOT NULL DEFAULT false,
    author_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Processes that claim files; a file's lease is its worker's row, kept alive by heartbeats.
-- Deleting a dead worker's row releases its files (files.worker_id ON DELETE SET NULL).
CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE files (
    id             TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    original_name  TEXT NOT NULL,
    filename       TEXT UNIQUE NOT NULL,        -- generated blob name, never the client's
    mimetype       TEXT NOT NULL,
    size           BIGINT NOT NULL CHECK (size >= 0),  -- seed: INTEGER; files above 2 GiB are ordinary
    type           file_type NOT NULL,
    status         file_status NOT NULL DEFAULT 'UPLOADING',
    path           TEXT NOT NULL,               -- relative to STORAGE_DIR
    url            TEXT,
    thumbnail      TEXT,
    metadata       JSONB,
    uploaded_by_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    post_id        TEXT REFERENCES posts(id) ON DELETE SET NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- upload protocol
    size_deferred  BOOLEAN NOT NULL DEFAULT false,     -- tus Upload-Defer-Length: size not known yet
    chunk_size     INTEGER NOT NULL CHECK (chunk_size > 0),
    bytes_received BIGINT NOT NULL DEFAULT 0 CHECK (bytes_received >= 0),
    sha256         TEXT,                        -- declared by the client, checked on assembly
    expires_at     TIMESTAMPTZ,                 -- unfinished uploads are removed after this
    error          TEXT,                        -- why the file FAILED
    -- processing
    attempts       INTEGER NOT NULL DEFAULT 0,
    worker_id      TEXT REFERENCES workers(id) ON DELETE SET NULL,
    claimed_at     TIMESTAMPTZ,
    run_after      TIMESTAMPTZ NOT NULL DEFAULT now()  -- retry backoff
);

CREATE TABLE file_chunks (
    id          TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    file_id     TEXT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL CHECK (chunk_index >= 0),
    data        BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (file_id, chunk_index)
);
-- Media does not compress: TOAST compression would only burn CPU on every chunk.
ALTER TABLE file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TRIGGER users_updated_at BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER posts_updated_at BEFORE UPDATE ON posts FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER files_updated_at BEFORE UPDATE ON files FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- The seed's performance indexes
CREATE INDEX idx_users_email ON users(email);
CREATE INDEX idx_users_role ON users(role);
CREATE INDEX idx_posts_author_id ON posts(author_id);
CREATE INDEX idx_posts_published ON posts(published);
CREATE INDEX idx_files_uploaded_by_id ON files(uploaded_by_id);
CREATE INDEX idx_files_type_status ON files(type, status);
CREATE INDEX idx_files_created_at ON files(created_at);
-- composite
CREATE INDEX idx_posts_author_published ON posts(author_id, published);
CREATE INDEX idx_files_user_type ON files(uploaded_by_id, type);
-- partial
CREATE INDEX idx_active_users ON users(id) WHERE is_active = true;
CREATE INDEX idx_completed_files ON files(id) WHERE status = 'COMPLETED';

-- chunkd's own: the worker's claim, post attachments, expiry sweeps
CREATE INDEX idx_files_processing_queue ON files(run_after) WHERE status = 'PROCESSING' AND worker_id IS NULL;
CREATE INDEX idx_files_worker_id ON files(worker_id) WHERE worker_id IS NOT NULL;
CREATE INDEX idx_files_post_id ON files(post_id) WHERE post_id IS NOT NULL;
CREATE INDEX idx_files_uploading_expires ON files(expires_at) WHERE status = 'UPLOADING';
