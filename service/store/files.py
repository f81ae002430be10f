"""files: the one row type of both upload protocols, how a new upload row is made, and the reads and
deletes of the files API."""

from __future__ import annotations

import dataclasses

import asyncpg

from service.errors import ValidationFailed
from service.models import ApiToken, File, NewUpload, User
from service.storage import layout
from service.store import sessions, tokens
from service.store.rows import columns, row_to

# Every column of `files` that models.File holds, and the database's verdict on expiry.
FILE_COLUMNS = (
    ", ".join(f.name for f in dataclasses.fields(File) if f.name != "expired")
    + ", (status = 'UPLOADING' AND expires_at IS NOT NULL AND expires_at <= now()) AS expired"
)

# The same of `files f` in a join, each named f_<field>.
JOINED_FILE_COLUMNS = (
    ", ".join(f"f.{f.name} AS f_{f.name}" for f in dataclasses.fields(File) if f.name != "expired")
    + ", (f.status = 'UPLOADING' AND f.expires_at IS NOT NULL AND f.expires_at <= now()) AS f_expired"
)


def file_from(row: asyncpg.Record) -> File:
    return File(**row)


# NOTIFY channels. files_ready wakes workers (payload: file id); LISTEN is only a hint, workers also poll.
FILES_READY = "files_ready"

MARK_READY = """
UPDATE files SET status = 'PROCESSING', run_after = now(), expires_at = NULL
 WHERE id = $1 AND status = 'UPLOADING'
RETURNING id
"""
NOTIFY_READY = "SELECT pg_notify($1, $2)"


async def mark_ready(conn: asyncpg.Connection, file_id: str) -> bool:
    """UPLOADING -> PROCESSING and wake a worker, in one transaction (NOTIFY is sent on commit).
    False when the file was not UPLOADING: a repeated completion changes nothing."""
    async with conn.transaction():
        if await conn.fetchval(MARK_READY, file_id) is None:
            return False
        await conn.execute(NOTIFY_READY, FILES_READY, file_id)
        return True


# A post named must be the uploader's own; the blob name is ours, never the client's.
INSERT_UPLOAD = f"""
INSERT INTO files (uploaded_by_id, original_name, filename, path, mimetype, type, size, chunk_size, expires_at,
                   protocol, size_deferred, sha256, post_id, tus_metadata, tus_concat, tus_parts)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9), $10, $11, $12, $13, $14, $15, $16
 WHERE $13::text IS NULL OR EXISTS (SELECT 1 FROM posts WHERE id = $13 AND author_id = $1)
RETURNING {FILE_COLUMNS}
"""


async def insert_upload(conn: asyncpg.Connection, new: NewUpload) -> File:
    """A new UPLOADING file of any protocol. One of known length 0 is complete at once and goes
    straight to PROCESSING, except a part of a tus concatenation (the final upload takes it) and an
    upload of the IETF draft (complete only when its client says Upload-Complete: ?1)."""
    blob = layout.new_blob_name()
    async with conn.transaction():
        row = await conn.fetchrow(
            INSERT_UPLOAD,
            new.uploaded_by_id,
            new.original_name,
            blob,
            layout.blob_key(blob),
            new.mimetype,
            new.type,
            new.size,
            new.chunk_size,
            float(new.expires_in),
            new.protocol,
            new.size_deferred,
            new.sha256,
            new.post_id,
            new.tus_metadata,
            new.tus_concat,
            new.tus_parts,
        )
        if row is None:
            raise ValidationFailed(f"post {new.post_id} does not exist or is not yours", field="post_id")
        file = file_from(row)
        if file.complete and file.tus_concat is None and file.protocol != "rufh" and await mark_ready(conn, file.id):
            file = await get_any_file(conn, file.id)
    return file


GET_ANY_FILE = f"SELECT {FILE_COLUMNS} FROM files WHERE id = $1"


async def get_any_file(conn: asyncpg.Connection, file_id: str) -> File:
    """A file known to exist (read again in the transaction that changed it), whoever owns it."""
    return file_from(await conn.fetchrow(GET_ANY_FILE, file_id))


# An appended upload (tus, the IETF draft) is done: from the offset its writer holds, never another. A
# length left open until now (tus Upload-Defer-Length, the draft's Upload-Complete without one) becomes
# the offset; a declared one must have been reached.
FINISH_UPLOAD = f"""
UPDATE files SET status = 'PROCESSING', run_after = now(), expires_at = NULL, size = bytes_received,
                 size_deferred = false
 WHERE id = $1 AND status = 'UPLOADING' AND bytes_received = $2 AND (size_deferred OR size = bytes_received)
RETURNING {FILE_COLUMNS}
"""


async def finish_upload(conn: asyncpg.Connection, file_id: str, offset: int) -> File | None:
    """mark_ready for appended uploads, returning the file as it now is; None if it was not UPLOADING
    at that offset (a repeated completion, or a lost race)."""
    async with conn.transaction():
        row = await conn.fetchrow(FINISH_UPLOAD, file_id, offset)
        if row is None:
            return None
        await conn.execute(NOTIFY_READY, FILES_READY, file_id)
        return file_from(row)


GET_FILE = f"SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND (uploaded_by_id = $2 OR $3)"


async def get_file(conn: asyncpg.Connection, file_id: str, user_id: str, is_admin: bool) -> File | None:
    """The file if the caller owns it or is an admin; None otherwise (the API answers 404 either way)."""
    row = await conn.fetchrow(GET_FILE, file_id, user_id, is_admin)
    return file_from(row) if row else None


# A status poll in one statement: the access token's user if its session is live (the rule of
# sessions.GET_SESSION_USER), and the file if that user owns it or is an admin.
GET_SESSION_FILE = f"""
SELECT {columns(User, "u", "u_")}, {JOINED_FILE_COLUMNS}
  FROM users u LEFT JOIN files f ON f.id = $3 AND (f.uploaded_by_id = u.id OR u.role = 'ADMIN')
 WHERE u.id = $2 AND {sessions.LIVE_SESSION_USER}
"""


async def get_session_file(
    conn: asyncpg.Connection, session_id: str, user_id: str, file_id: str
) -> tuple[User | None, File | None]:
    """(the session's user, the file): (None, None) when the session has ended or the user is inactive,
    (user, None) when the file is missing or not theirs."""
    row = await conn.fetchrow(GET_SESSION_FILE, session_id, user_id, file_id)
    if row is None:
        return None, None
    return row_to(User, row, "u_"), None if row["f_id"] is None else row_to(File, row, "f_")


# The same for a poll with an API token: the token and its user (tokens.GET_TOKEN_USER's rule, which
# also records its use), and the file if that user owns it or is an admin.
GET_TOKEN_FILE = f"""
WITH {tokens.TOKEN_CALLER}
SELECT caller.*, {JOINED_FILE_COLUMNS}
  FROM caller LEFT JOIN files f ON f.id = $2 AND (f.uploaded_by_id = caller.u_id OR caller.u_role = 'ADMIN')
"""


async def get_token_file(
    conn: asyncpg.Connection, token_hash: str, file_id: str
) -> tuple[tuple[ApiToken, User] | None, File | None]:
    """((the token, its user), the file): (None, None) for an unknown, revoked or expired token or an
    inactive user, (found, None) when the file is missing or not theirs."""
    row = await conn.fetchrow(GET_TOKEN_FILE, token_hash, file_id)
    if row is None:
        return None, None
    found = (row_to(ApiToken, row, "t_"), row_to(User, row, "u_"))
    return found, None if row["f_id"] is None else row_to(File, row, "f_")


# A file's bytes may also be fetched by whoever may read the post it is attached to: a published post
# is readable by every user (drafts only by their author and admins, who pass the first test anyway).
GET_READABLE_FILE = f"""
SELECT {FILE_COLUMNS} FROM files f
 WHERE id = $1
   AND (uploaded_by_id = $2 OR $3 OR EXISTS (SELECT 1 FROM posts p WHERE p.id = f.post_id AND p.published))
"""


async def get_readable_file(conn: asyncpg.Connection, file_id: str, user_id: str, is_admin: bool) -> File | None:
    """The file if the caller owns it, is an admin, or may read the published post it is attached to."""
    row = await conn.fetchrow(GET_READABLE_FILE, file_id, user_id, is_admin)
    return file_from(row) if row else None


LIST_FILES = f"""
SELECT {FILE_COLUMNS} FROM files
 WHERE ($1::text IS NULL OR uploaded_by_id = $1)
   AND ($2::file_status IS NULL OR status = $2)
   AND ($3::file_type IS NULL OR type = $3)
 ORDER BY created_at DESC, id
 LIMIT $4 OFFSET $5
"""
COUNT_FILES = """
SELECT count(*) FROM files
 WHERE ($1::text IS NULL OR uploaded_by_id = $1)
   AND ($2::file_status IS NULL OR status = $2)
   AND ($3::file_type IS NULL OR type = $3)
"""


async def list_files(
    conn: asyncpg.Connection, owner_id: str | None, status: str | None, type_: str | None, limit: int, offset: int
) -> tuple[list[File], int]:
    """A page of files, newest first, and the total matching; owner_id None means everyone's (admins)."""
    rows = await conn.fetch(LIST_FILES, owner_id, status, type_, limit, offset)
    total = await conn.fetchval(COUNT_FILES, owner_id, status, type_)
    return [file_from(r) for r in rows], total


DELETE_FILE = f"DELETE FROM files WHERE id = $1 AND (uploaded_by_id = $2 OR $3) RETURNING {FILE_COLUMNS}"


async def delete_file(conn: asyncpg.Connection, file_id: str, user_id: str, is_admin: bool) -> File | None:
    """Deletes the row (chunks cascade) and returns it, so the caller can remove the blobs."""
    row = await conn.fetchrow(DELETE_FILE, file_id, user_id, is_admin)
    return file_from(row) if row else None
