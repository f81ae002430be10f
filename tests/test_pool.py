"""Pooled connections go back to the pool without a reset round trip, unless they took session state."""
from __future__ import annotations

from pathlib import Path

from service import db
from tests.support import make_settings

HELD_ADVISORY_LOCKS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"


async def test_release_resets_only_connections_marked_as_keeping_session_state(database_url: str,
                                                                                storage_dir: Path) -> None:
    pool = await db.create_pool(make_settings(database_url, storage_dir, DATABASE_POOL_SIZE="1"))
    try:
        async with pool.acquire() as conn:  # a plain release: nothing sent, so a session setting survives
            await conn.execute("SET application_name = 'left over'")
        async with pool.acquire() as conn:  # the only connection, again
            assert await conn.fetchval("SHOW application_name") == "left over"

        async with pool.acquire() as conn:  # as tus_locks and cleanup do: marked, then locked, never unlocked
            db.keeps_session_state(conn)
            assert await conn.fetchval("SELECT pg_try_advisory_lock(42)")
        async with pool.acquire() as conn:
            assert await conn.fetchval(HELD_ADVISORY_LOCKS) == 0
            assert await conn.fetchval("SHOW application_name") == ""

        async with pool.acquire() as conn:  # a transaction left open is rolled back either way
            await conn.execute("BEGIN; CREATE TABLE half_done (id int)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await pool.close()
