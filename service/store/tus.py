"""Appended uploads: rows of `files` whose bytes are `file_chunks` appended in order, chunk_index 0, 1,
2, ... with lengths of up to files.chunk_size; the worker joins them by chunk_index. Two protocols write
them: tus (protocol = 'tus') and the IETF Resumable Uploads draft (protocol = 'rufh'); the functions
that find an upload take the protocol, so neither ever touches the other's uploads."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from service.models import File
from service.store.files import FILE_COLUMNS, file_from

GET_UPLOAD = f"SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND protocol = $2"


async def get_upload(conn: asyncpg.Connection, upload_id: str, protocol: str = "tus") -> File | None:
    row = await conn.fetchrow(GET_UPLOAD, upload_id, protocol)
    return None if row is None else file_from(row)


NEXT_CHUNK_INDEX = "SELECT coalesce(max(chunk_index) + 1, 0) FROM file_chunks WHERE file_id = $1"


async def get_next_chunk_index(conn: asyncpg.Connection, upload_id: str) -> int:
    return await conn.fetchval(NEXT_CHUNK_INDEX, upload_id)


INSERT_CHUNK = "INSERT INTO file_chunks (file_id, chunk_index, slot, data) VALUES ($1, $2, chunk_slot($1), $3)"


async def insert_chunk(
    conn: asyncpg.Connection, upload_id: str, chunk_index: int, data: bytes | bytearray | memoryview
) -> None:
    await conn.execute(INSERT_CHUNK, upload_id, chunk_index, data)


# The offset moves only from the value this writer read under its lock: anything else is a lost race.
# An upload that is still being written stays alive: every write pushes its expiry out again.
ADVANCE_OFFSET = """
UPDATE files SET bytes_received = bytes_received + $3, expires_at = now() + make_interval(secs => $4)
 WHERE id = $1 AND bytes_received = $2 AND status = 'UPLOADING'
RETURNING bytes_received, expires_at
"""


async def advance_offset(
    conn: asyncpg.Connection, upload_id: str, offset: int, count: int, expiry_seconds: int
) -> tuple[int, datetime] | None:
    row = await conn.fetchrow(ADVANCE_OFFSET, upload_id, offset, count, expiry_seconds)
    return None if row is None else (row["bytes_received"], row["expires_at"])


DECLARE_LENGTH = f"""
UPDATE files SET size = $2, size_deferred = false
 WHERE id = $1 AND size_deferred AND bytes_received <= $2
RETURNING {FILE_COLUMNS}
"""


async def declare_length(conn: asyncpg.Connection, upload_id: str, size: int) -> File | None:
    """Upload-Defer-Length: the length is set once, never below what was received."""
    row = await conn.fetchrow(DECLARE_LENGTH, upload_id, size)
    return None if row is None else file_from(row)


DELETE_UPLOAD = "DELETE FROM files WHERE id = $1 AND protocol = $2 RETURNING path, filename"


async def delete_upload(conn: asyncpg.Connection, upload_id: str, protocol: str = "tus") -> tuple[str, str] | None:
    """Removes the upload and (by cascade) its chunks: its path and blob name, or None if it was gone."""
    row = await conn.fetchrow(DELETE_UPLOAD, upload_id, protocol)
    return None if row is None else (row["path"], row["filename"])


LOCK_PARTS = f"SELECT {FILE_COLUMNS} FROM files WHERE id = any($1::text[]) AND protocol = 'tus' FOR UPDATE"


async def lock_parts(conn: asyncpg.Connection, part_ids: list[str]) -> dict[str, File]:
    """The partial uploads a final one names, row-locked until the concatenation commits."""
    return {r["id"]: file_from(r) for r in await conn.fetch(LOCK_PARTS, part_ids)}


# No byte is copied: an UPDATE that leaves `data` alone keeps the row's TOAST pointer, so only the
# small heap tuples are rewritten, whatever the size of the chunks. The rows keep their slot (the
# partition key, sql/0217): a new slot would move every byte to another partition.
MOVE_CHUNKS = """
WITH parts AS (SELECT part_id, position FROM unnest($2::text[]) WITH ORDINALITY AS p(part_id, position)),
     numbered AS (SELECT c.file_id, c.chunk_index AS old_index, c.slot,
                         row_number() OVER (ORDER BY p.position, c.chunk_index) - 1 AS chunk_index
                    FROM file_chunks c JOIN parts p ON p.part_id = c.file_id)
UPDATE file_chunks c SET file_id = $1, chunk_index = n.chunk_index
  FROM numbered n
 WHERE c.file_id = n.file_id AND c.chunk_index = n.old_index AND c.slot = n.slot
"""
COMPLETE_FINAL = "UPDATE files SET bytes_received = size WHERE id = $1"
DELETE_PARTS = "DELETE FROM files WHERE id = any($1::text[]) AND tus_concat = 'partial'"


async def move_chunks(conn: asyncpg.Connection, final_id: str, part_ids: list[str]) -> None:
    """The partials' chunks become the final upload's, in order; the partials, now empty, are removed."""
    async with conn.transaction():
        await conn.execute(MOVE_CHUNKS, final_id, part_ids)
        await conn.execute(COMPLETE_FINAL, final_id)
        await conn.execute(DELETE_PARTS, part_ids)


# Advisory locks: one writer per upload across every process. The two-key form keeps tus locks apart
# from any other advisory lock of the application (migrations use the one-key form).
TUS_LOCK_SPACE = "hashtext('chunkd.tus')"
TRY_LOCK_UPLOAD = f"SELECT pg_try_advisory_lock({TUS_LOCK_SPACE}, hashtext($1))"


async def try_lock_upload(conn: asyncpg.Connection, upload_id: str) -> bool:
    return await conn.fetchval(TRY_LOCK_UPLOAD, upload_id)


UNLOCK_UPLOAD = f"SELECT pg_advisory_unlock({TUS_LOCK_SPACE}, hashtext($1))"


async def unlock_upload(conn: asyncpg.Connection, upload_id: str) -> None:
    await conn.fetchval(UNLOCK_UPLOAD, upload_id)


# Payload `<1|0> <upload id>`: 1 = terminate (the writer stops even if active), 0 = only if stalled.
RELEASE_CHANNEL = "tus_release"
NOTIFY_RELEASE = "SELECT pg_notify($1, $2)"


async def notify_release(conn: asyncpg.Connection, upload_id: str, force: bool) -> None:
    await conn.execute(NOTIFY_RELEASE, RELEASE_CHANNEL, f"{int(force)} {upload_id}")
