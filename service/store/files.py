"""files: SQL shared by both upload protocols and the worker."""
from __future__ import annotations

import asyncpg

from service.models import StoredFile

# NOTIFY channels. files_ready wakes workers (payload: file id); LISTEN is only a hint, workers also poll.
FILES_READY = "files_ready"

MARK_READY = """
UPDATE files SET status = 'PROCESSING', run_after = now(), expires_at = NULL
 WHERE id = $1 AND status = 'UPLOADING'
RETURNING id
"""


async def mark_ready(conn: asyncpg.Connection, file_id: str) -> bool:
    """UPLOADING -> PROCESSING and wake a worker, in one transaction (NOTIFY is sent on commit).
    False when the file was not UPLOADING: a repeated completion changes nothing."""
    async with conn.transaction():
        if await conn.fetchval(MARK_READY, file_id) is None:
            return False
        await conn.execute("SELECT pg_notify($1, $2)", FILES_READY, file_id)
        return True


FILE_COLUMNS = """id, status, type, mimetype, size, original_name, filename, path, url, thumbnail, metadata, error,
       uploaded_by_id, post_id, created_at, updated_at"""

# An appended upload (tus, the IETF draft) is done: from the offset its writer holds, never another. A
# length left open until now (tus Upload-Defer-Length, the draft's Upload-Complete without one) becomes
# the offset; a declared one must have been reached.
FINISH_UPLOAD = f"""
UPDATE files SET status = 'PROCESSING', run_after = now(), expires_at = NULL, size = bytes_received,
                 size_deferred = false
 WHERE id = $1 AND status = 'UPLOADING' AND bytes_received = $2 AND (size_deferred OR size = bytes_received)
RETURNING {FILE_COLUMNS}
"""


async def finish_upload(conn: asyncpg.Connection, file_id: str, offset: int) -> StoredFile | None:
    """mark_ready for appended uploads, returning the file as it now is; None if it was not UPLOADING
    at that offset (a repeated completion, or a lost race)."""
    async with conn.transaction():
        row = await conn.fetchrow(FINISH_UPLOAD, file_id, offset)
        if row is None:
            return None
        await conn.execute("SELECT pg_notify($1, $2)", FILES_READY, file_id)
        return StoredFile(**row)

GET_FILE = f"SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND (uploaded_by_id = $2 OR $3)"


async def get_file(conn: asyncpg.Connection, file_id: str, user_id: str, is_admin: bool) -> StoredFile | None:
    """The file if the caller owns it or is an admin; None otherwise (the API answers 404 either way)."""
    row = await conn.fetchrow(GET_FILE, file_id, user_id, is_admin)
    return StoredFile(**row) if row else None


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


async def list_files(conn: asyncpg.Connection, owner_id: str | None, status: str | None, type_: str | None,
                     limit: int, offset: int) -> tuple[list[StoredFile], int]:
    """A page of files, newest first, and the total matching; owner_id None means everyone's (admins)."""
    rows = await conn.fetch(LIST_FILES, owner_id, status, type_, limit, offset)
    total = await conn.fetchval(COUNT_FILES, owner_id, status, type_)
    return [StoredFile(**r) for r in rows], total


DELETE_FILE = f"DELETE FROM files WHERE id = $1 AND (uploaded_by_id = $2 OR $3) RETURNING {FILE_COLUMNS}"


async def delete_file(conn: asyncpg.Connection, file_id: str, user_id: str, is_admin: bool) -> StoredFile | None:
    """Deletes the row (chunks cascade) and returns it, so the caller can remove the blobs."""
    row = await conn.fetchrow(DELETE_FILE, file_id, user_id, is_admin)
    return StoredFile(**row) if row else None
