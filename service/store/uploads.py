"""uploads: the native protocol's sessions and chunks (a new one is made by store.files.insert_upload)."""

from __future__ import annotations

import asyncpg

from service.errors import UploadClosed, UploadNotFound, ValidationFailed
from service.models import File, FileStatus
from service.store.files import FILE_COLUMNS, file_from, mark_ready

# protocol: a tus upload (sql/0004) appends variable-length chunks; fixed-index PUTs would corrupt it.
GET_UPLOAD = f"SELECT {FILE_COLUMNS} FROM files WHERE id = $1 AND uploaded_by_id = $2 AND protocol = 'native'"


async def get_upload(conn: asyncpg.Connection, file_id: str, user_id: str) -> File | None:
    """The caller's upload; None for a missing one and for anyone else's (both answer 404)."""
    row = await conn.fetchrow(GET_UPLOAD, file_id, user_id)
    return file_from(row) if row else None


RECEIVED_CHUNKS = "SELECT chunk_index FROM file_chunks WHERE file_id = $1 ORDER BY chunk_index"


async def list_received_chunks(conn: asyncpg.Connection, file_id: str) -> list[int]:
    return [r[0] for r in await conn.fetch(RECEIVED_CHUNKS, file_id)]


ADD_RECEIVED_BYTES = """
UPDATE files SET bytes_received = bytes_received + $2
 WHERE id = $1 AND status = 'UPLOADING' AND (expires_at IS NULL OR expires_at > now())
RETURNING bytes_received
"""

INSERT_CHUNK = """
INSERT INTO file_chunks (file_id, chunk_index, slot, data) VALUES ($1, $2, chunk_slot($1), $3)
    ON CONFLICT (file_id, chunk_index, slot) DO NOTHING
"""


async def insert_chunk(conn: asyncpg.Connection, file_id: str, index: int, data: bytearray) -> int | None:
    """Stores one chunk and counts its bytes in the same transaction, so bytes_received stays exact
    under parallel PUTs. Returns the new bytes_received, or None when the index was already stored.
    Raises UploadClosed (nothing stored) when the upload stopped accepting chunks meanwhile."""
    try:
        async with conn.transaction():
            if await conn.execute(INSERT_CHUNK, file_id, index, data) == "INSERT 0 0":
                return None
            received = await conn.fetchval(ADD_RECEIVED_BYTES, file_id, len(data))
            if received is None:
                raise UploadClosed(f"upload {file_id} was completed, aborted or expired meanwhile")
            return received
    except asyncpg.ForeignKeyViolationError:
        raise UploadNotFound(f"upload {file_id}") from None


CHUNK_SHA256 = "SELECT encode(sha256(data), 'hex') FROM file_chunks WHERE file_id = $1 AND chunk_index = $2"


async def get_chunk_sha256(conn: asyncpg.Connection, file_id: str, index: int) -> str | None:
    """Computed by PostgreSQL next to the data: a repeat is compared without fetching the stored chunk."""
    return await conn.fetchval(CHUNK_SHA256, file_id, index)


LOCK_UPLOAD_STATUS = "SELECT status, sha256 FROM files WHERE id = $1 FOR UPDATE"
SET_SHA256 = "UPDATE files SET sha256 = $2 WHERE id = $1"


async def complete_upload(conn: asyncpg.Connection, upload: File, sha256: str | None = None) -> list[int]:
    """UPLOADING -> PROCESSING (waking a worker) when every chunk is stored; otherwise nothing changes
    and the missing indexes are returned. The row lock orders this against concurrent chunk PUTs:
    a chunk either counted before, or its transaction sees PROCESSING and stores nothing.
    `sha256`, given now, is what the worker checks the file against; it must agree with one declared
    at creation."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_UPLOAD_STATUS, upload.id)
        if row is None:
            raise UploadNotFound(f"upload {upload.id}")
        if sha256 is not None and row["sha256"] is not None and sha256 != row["sha256"]:
            raise ValidationFailed(
                f"sha256 {sha256} is not the {row['sha256']} declared when the upload was created", field="sha256"
            )
        if row["status"] != FileStatus.UPLOADING:
            return []
        received = set(await list_received_chunks(conn, upload.id))
        missing = [i for i in range(upload.total_chunks) if i not in received]
        if not missing:
            if sha256 is not None and row["sha256"] is None:
                await conn.execute(SET_SHA256, upload.id, sha256)
            await mark_ready(conn, upload.id)
        return missing


DELETE_UPLOAD = """
DELETE FROM files WHERE id = $1 AND uploaded_by_id = $2 AND status = 'UPLOADING' AND protocol = 'native' RETURNING id
"""


async def delete_upload(conn: asyncpg.Connection, file_id: str, user_id: str) -> bool:
    """Aborts an unfinished upload: the row goes, its chunks with it (ON DELETE CASCADE)."""
    return await conn.fetchval(DELETE_UPLOAD, file_id, user_id) is not None
