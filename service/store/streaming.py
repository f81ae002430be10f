"""streaming: a worker holding an upload that is still arriving, to assemble its prefix meanwhile.

The hold is files.worker_id on an UPLOADING row: the same lease as processing (the worker's heartbeat,
ON DELETE SET NULL when it dies), so once the upload completes nobody else claims it, and the worker
that streamed it finishes it."""

from __future__ import annotations

import asyncpg

from service.models import File, FileStatus
from service.store.files import FILE_COLUMNS, file_from

# Recently active only (a chunk in the last $3 seconds): an abandoned upload is not held, and one let go
# for being idle is not taken again until its client is back. tus partial uploads are excluded (their
# chunks move into the final upload), and so are those whose length is not known yet.
CLAIM_UPLOADING_FILE = f"""
UPDATE files SET worker_id = $1, claimed_at = now()
 WHERE id = (SELECT f.id FROM files f
              WHERE f.status = 'UPLOADING' AND f.worker_id IS NULL AND NOT f.size_deferred
                AND f.size >= $2 AND f.tus_concat IS NULL AND (f.expires_at IS NULL OR f.expires_at > now())
                AND EXISTS (SELECT 1 FROM file_chunks c WHERE c.file_id = f.id AND c.chunk_index = 0)
                AND EXISTS (SELECT 1 FROM file_chunks c
                             WHERE c.file_id = f.id AND c.created_at > now() - make_interval(secs => $3))
              ORDER BY f.created_at LIMIT 1 FOR UPDATE OF f SKIP LOCKED)
RETURNING {FILE_COLUMNS}
"""


async def claim_uploading_file(
    conn: asyncpg.Connection, worker_id: str, min_size: int, active_seconds: float
) -> File | None:
    row = await conn.fetchrow(CLAIM_UPLOADING_FILE, worker_id, min_size, float(active_seconds))
    return file_from(row) if row else None


GET_HELD_STATUS = "SELECT status FROM files WHERE id = $1 AND worker_id = $2"


async def get_held_status(conn: asyncpg.Connection, file_id: str, worker_id: str) -> FileStatus | None:
    """The file's status while this worker still holds it; None once it is gone or no longer ours."""
    status = await conn.fetchval(GET_HELD_STATUS, file_id, worker_id)
    return None if status is None else FileStatus(status)


LIST_CHUNKS_FROM = """
SELECT chunk_index, length(data) FROM file_chunks WHERE file_id = $1 AND chunk_index >= $2 ORDER BY chunk_index
"""


async def list_chunks_from(conn: asyncpg.Connection, file_id: str, first: int) -> list[tuple[int, int]]:
    """(index, length) of the committed chunks from index `first` on, in order (lengths from the TOAST
    pointers: no chunk data is read)."""
    return [(r[0], r[1]) for r in await conn.fetch(LIST_CHUNKS_FROM, file_id, first)]


TAKE_STREAMED_FILE = f"""
UPDATE files SET attempts = attempts + 1, claimed_at = now()
 WHERE id = $1 AND worker_id = $2 AND status = 'PROCESSING'
RETURNING {FILE_COLUMNS}
"""


async def take_streamed_file(conn: asyncpg.Connection, file_id: str, worker_id: str) -> File | None:
    """The completed upload this worker held, now claimed for processing as CLAIM_NEXT_FILE would
    (an attempt counted); None if it was lost meanwhile."""
    row = await conn.fetchrow(TAKE_STREAMED_FILE, file_id, worker_id)
    return file_from(row) if row else None


RELEASE_FILE = """
UPDATE files SET worker_id = NULL WHERE id = $1 AND worker_id = $2 AND status IN ('UPLOADING', 'PROCESSING')
"""


async def release_file(conn: asyncpg.Connection, file_id: str, worker_id: str) -> None:
    """Lets go of an upload that went idle or could not be streamed: once complete, any worker
    processes it the usual way."""
    await conn.execute(RELEASE_FILE, file_id, worker_id)


# Claimed a minute ago or more: one claimed just now may not be in the claimer's task registry yet.
LIST_HELD_FILES = """
SELECT id FROM files WHERE worker_id = $1 AND status IN ('UPLOADING', 'PROCESSING')
   AND coalesce(claimed_at, '-infinity') < now() - interval '1 minute'
"""


async def list_held_files(conn: asyncpg.Connection, worker_id: str) -> list[str]:
    """Files this worker has held for a while (streamed or being processed)."""
    return [r[0] for r in await conn.fetch(LIST_HELD_FILES, worker_id)]
