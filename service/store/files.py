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

GET_FILE = f"SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND (uploaded_by_id = $2 OR $3)"


async def get_file(conn: asyncpg.Connection, file_id: str, user_id: str, is_admin: bool) -> StoredFile | None:
    """The file if the caller owns it or is an admin; None otherwise (the API answers 404 either way)."""
    row = await conn.fetchrow(GET_FILE, file_id, user_id, is_admin)
    return StoredFile(**row) if row else None


# A file's bytes may also be fetched by whoever may read the post it is attached to: a published post
# is readable by every user (drafts only by their author and admins, who pass the first test anyway).
GET_READABLE_FILE = f"""
SELECT {FILE_COLUMNS} FROM files f
 WHERE id = $1
   AND (uploaded_by_id = $2 OR $3 OR EXISTS (SELECT 1 FROM posts p WHERE p.id = f.post_id AND p.published))
"""


async def get_readable_file(conn: asyncpg.Connection, file_id: str, user_id: str, is_admin: bool) -> StoredFile | None:
    """The file if the caller owns it, is an admin, or may read the published post it is attached to."""
    row = await conn.fetchrow(GET_READABLE_FILE, file_id, user_id, is_admin)
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
