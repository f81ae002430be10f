"""cleanup: the rows the periodic cleanup pass removes. Each DELETE returns what it removed, so a
dry run is the same statement in a transaction that is rolled back."""

from __future__ import annotations

import asyncpg

from service.models import File
from service.store.files import FILE_COLUMNS, file_from

ADVISORY_LOCK = 0x63_6C_65_61  # one pass at a time across every server and worker ('clea')
TRY_LOCK = "SELECT pg_try_advisory_lock($1)"


async def try_lock(conn: asyncpg.Connection) -> bool:
    """False when another process is running a pass. Held by the session: unlock() on the same connection."""
    return await conn.fetchval(TRY_LOCK, ADVISORY_LOCK)


UNLOCK = "SELECT pg_advisory_unlock($1)"


async def unlock(conn: asyncpg.Connection) -> None:
    await conn.execute(UNLOCK, ADVISORY_LOCK)


# The seed's cleanupOldFiles: FAILED files created more than $1 days ago. Chunks go with them (ON DELETE CASCADE).
DELETE_OLD_FAILED_FILES = f"""
DELETE FROM files WHERE status = 'FAILED' AND created_at < now() - make_interval(days => $1)
RETURNING {FILE_COLUMNS}
"""


async def delete_old_failed_files(conn: asyncpg.Connection, days: int) -> list[File]:
    return [file_from(r) for r in await conn.fetch(DELETE_OLD_FAILED_FILES, days)]


# Guarded on status: an upload completed meanwhile (PROCESSING, expires_at NULL) is not touched.
DELETE_EXPIRED_UPLOADS = f"""
DELETE FROM files WHERE status = 'UPLOADING' AND expires_at < now()
RETURNING {FILE_COLUMNS}
"""


async def delete_expired_uploads(conn: asyncpg.Connection) -> list[File]:
    return [file_from(r) for r in await conn.fetch(DELETE_EXPIRED_UPLOADS)]


# Chunks only matter while their file is UPLOADING or PROCESSING. The worker drops a file's chunks just
# after COMPLETED; a crash in between leaves them to this. (Chunks without a file at all need the ON
# DELETE CASCADE constraint dropped: a partial restore, manual surgery.) The anti-join reads only the
# chunk tuples, not their TOASTed data.
DELETE_ORPHAN_CHUNKS = """
DELETE FROM file_chunks c
 WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.id = c.file_id AND f.status IN ('UPLOADING', 'PROCESSING'))
"""


async def delete_orphan_chunks(conn: asyncpg.Connection) -> int:
    return int((await conn.execute(DELETE_ORPHAN_CHUNKS)).split()[-1])


KNOWN_FILENAMES = "SELECT filename FROM files WHERE filename = any($1::text[])"


async def list_known_filenames(conn: asyncpg.Connection, names: list[str]) -> set[str]:
    return {r["filename"] for r in await conn.fetch(KNOWN_FILENAMES, names)}


# Accounts' leftovers (issue 13): sessions past their expiry (a revoked one is kept until then, so its
# replayed refresh token is still recognised as reuse), failed logins out of any window, and webhook
# deliveries settled more than 30 days ago.
DELETE_EXPIRED_SESSIONS = "DELETE FROM sessions WHERE expires_at < now()"
DELETE_OLD_LOGIN_FAILURES = "DELETE FROM login_failures WHERE failed_at < now() - interval '1 day'"
DELETE_OLD_DELIVERIES = """
DELETE FROM webhook_deliveries
 WHERE status <> 'pending' AND coalesce(delivered_at, last_attempt_at) < now() - interval '30 days'
"""


async def delete_stale_account_rows(conn: asyncpg.Connection) -> int:
    removed = 0
    for statement in (DELETE_EXPIRED_SESSIONS, DELETE_OLD_LOGIN_FAILURES, DELETE_OLD_DELIVERIES):
        removed += int((await conn.execute(statement)).split()[-1])
    return removed
