"""files: SQL shared by both upload protocols and the worker."""
from __future__ import annotations

import asyncpg

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
