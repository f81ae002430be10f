"""workers: leases, claiming, reading chunks, and the guarded end of processing."""

from __future__ import annotations

from typing import Any

import asyncpg

from service.models import File
from service.store.files import FILE_COLUMNS, file_from

REGISTER_WORKER = """
INSERT INTO workers (id, hostname, pid) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET last_heartbeat = now()
"""


async def register_worker(conn: asyncpg.Connection, worker_id: str, hostname: str, pid: int) -> None:
    await conn.execute(REGISTER_WORKER, worker_id, hostname, pid)


HEARTBEAT = "UPDATE workers SET last_heartbeat = now() WHERE id = $1 RETURNING id"


async def heartbeat(conn: asyncpg.Connection, worker_id: str) -> bool:
    """False when others took this worker for dead and deleted it (its files were released)."""
    return await conn.fetchval(HEARTBEAT, worker_id) is not None


DELETE_STALE_WORKERS = """
DELETE FROM workers WHERE last_heartbeat < now() - make_interval(secs => $1) RETURNING id
"""


async def delete_stale_workers(conn: asyncpg.Connection, lease_seconds: float) -> list[str]:
    """Workers silent longer than a lease are dead: deleting them puts their files back in the queue
    (files.worker_id REFERENCES workers ON DELETE SET NULL)."""
    return [r[0] for r in await conn.fetch(DELETE_STALE_WORKERS, float(lease_seconds))]


DELETE_WORKER = "DELETE FROM workers WHERE id = $1"


async def delete_worker(conn: asyncpg.Connection, worker_id: str) -> None:
    """On a clean stop: any file still held goes back to the queue at once."""
    await conn.execute(DELETE_WORKER, worker_id)


CLAIM_NEXT_FILE = f"""
UPDATE files SET worker_id = $1, attempts = attempts + 1, claimed_at = now()
 WHERE id = (SELECT id FROM files
              WHERE status = 'PROCESSING' AND worker_id IS NULL AND run_after <= now()
              ORDER BY run_after LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING {FILE_COLUMNS}
"""


async def claim_next_file(conn: asyncpg.Connection, worker_id: str) -> File | None:
    row = await conn.fetchrow(CLAIM_NEXT_FILE, worker_id)
    return file_from(row) if row else None


CHUNK_LENGTHS = """
SELECT chunk_index, length(data) FROM file_chunks WHERE file_id = $1 ORDER BY chunk_index
"""


async def list_chunk_lengths(conn: asyncpg.Connection, file_id: str) -> list[tuple[int, int]]:
    """(index, length) of every chunk, in order. length() of an uncompressed (STORAGE EXTERNAL)
    value is read from its TOAST pointer: no chunk data is fetched."""
    return [(r[0], r[1]) for r in await conn.fetch(CHUNK_LENGTHS, file_id)]


READ_CHUNK_SLICE = """
SELECT substring(data FROM $3 FOR $4) FROM file_chunks WHERE file_id = $1 AND chunk_index = $2
"""


async def get_chunk_slice(conn: asyncpg.Connection, file_id: str, index: int, offset: int, length: int) -> bytes | None:
    """`length` bytes of a chunk from `offset`. With STORAGE EXTERNAL, PostgreSQL reads only the TOAST
    pieces of the slice, so memory stays bounded whatever MAX_CHUNK_SIZE is."""
    return await conn.fetchval(READ_CHUNK_SLICE, file_id, index, offset + 1, length)


FINISH_FILE = """
UPDATE files SET status = 'COMPLETED', type = $3, mimetype = $4, metadata = $5, error = NULL, worker_id = NULL,
                 blocked_reason = NULL, blocked_retries = 0
 WHERE id = $1 AND status = 'PROCESSING' AND worker_id = $2
RETURNING id
"""


async def finish_file(
    conn: asyncpg.Connection,
    file_id: str,
    worker_id: str,
    type_: str,
    mimetype: str,
    metadata: dict[str, Any],
) -> bool:
    """PROCESSING -> COMPLETED. False when the lease was lost (the file was deleted, or taken by another
    worker after this one was presumed dead). The chunks are dropped after this (delete_chunks), not in
    the same transaction: the client need not wait for a gigabyte of rows to be deleted."""
    return await conn.fetchval(FINISH_FILE, file_id, worker_id, type_, mimetype, metadata) is not None


DELETE_CHUNKS = "DELETE FROM file_chunks WHERE file_id = $1"
REMOVE_FILE_CHUNKS = "SELECT remove_file_chunks($1)"


async def delete_chunks(conn: asyncpg.Connection, file_id: str) -> None:
    """A COMPLETED file's chunks, now that its blob is durable: by TRUNCATE of each slot only this file
    uses, DELETE otherwise (sql/0217). A crash before this leaves them to the cleanup pass
    (delete_orphan_chunks)."""
    await conn.execute(REMOVE_FILE_CHUNKS, file_id)


FAIL_FILE = """
UPDATE files SET status = 'FAILED', error = $3, worker_id = NULL, blocked_reason = NULL, blocked_retries = 0
 WHERE id = $1 AND status = 'PROCESSING' AND worker_id = $2
RETURNING id
"""


async def fail_file(conn: asyncpg.Connection, file_id: str, worker_id: str, error: str) -> bool:
    """PROCESSING -> FAILED with its reason; the chunks are useless now and go too."""
    async with conn.transaction():
        if await conn.fetchval(FAIL_FILE, file_id, worker_id, error) is None:
            return False
        await conn.execute(DELETE_CHUNKS, file_id)
        return True


RETRY_FILE = """
UPDATE files SET worker_id = NULL, run_after = now() + make_interval(secs => $3),
                 attempts = attempts - CASE WHEN $4 THEN 0 ELSE 1 END,
                 blocked_reason = CASE WHEN $4 THEN NULL ELSE blocked_reason END,
                 blocked_retries = CASE WHEN $4 THEN 0 ELSE blocked_retries END
 WHERE id = $1 AND status = 'PROCESSING' AND worker_id = $2
RETURNING id
"""


async def retry_file(
    conn: asyncpg.Connection, file_id: str, worker_id: str, delay_seconds: float, count_attempt: bool = True
) -> bool:
    """Back to the queue, not before `delay_seconds`: a transient failure is retried with backoff.
    count_attempt=False hands the claim's attempt back: the failure was not the file's (and says nothing
    about whether its environment still holds it back); a counted one ends a blocked spell."""
    return await conn.fetchval(RETRY_FILE, file_id, worker_id, float(delay_seconds), count_attempt) is not None


BLOCK_FILE = """
UPDATE files SET worker_id = NULL, run_after = now() + make_interval(secs => $3), attempts = attempts - 1,
                 blocked_reason = $4, blocked_retries = blocked_retries + 1
 WHERE id = $1 AND status = 'PROCESSING' AND worker_id = $2
RETURNING id
"""


async def block_file(conn: asyncpg.Connection, file_id: str, worker_id: str, delay_seconds: float, reason: str) -> bool:
    """Back to the queue for `delay_seconds` because its environment holds it back (`reason`): the attempt is
    handed back, one more backoff step counted. False when the lease was lost."""
    return await conn.fetchval(BLOCK_FILE, file_id, worker_id, float(delay_seconds), reason) is not None


FILE_EXISTS = "SELECT 1 FROM files WHERE id = $1"


async def get_file_exists(conn: asyncpg.Connection, file_id: str) -> bool:
    return await conn.fetchval(FILE_EXISTS, file_id) is not None
