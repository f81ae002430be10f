"""Pooled connections go back to the pool without a reset round trip, unless they took session state;
over a unix socket, connections get a send buffer wide enough for chunks."""

from __future__ import annotations

import socket
from pathlib import Path

from service import db
from tests.support import make_settings

HELD_ADVISORY_LOCKS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"


async def test_release_resets_only_connections_marked_as_keeping_session_state(
    database_url: str, storage_dir: Path
) -> None:
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


async def test_unix_socket_connections_get_a_wide_send_buffer(database_url: str, storage_dir: Path) -> None:
    """A chunk goes to PostgreSQL in one message of up to MAX_CHUNK_SIZE: over a unix socket (the
    embedded database's) the kernel's default 208 KiB buffer would send it in slices."""
    wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
    pool = await db.create_pool(make_settings(database_url, storage_dir, DATABASE_POOL_SIZE="1"))
    try:
        async with pool.acquire() as conn:
            sock = conn._transport.get_extra_info("socket")
            assert sock.family == socket.AF_UNIX
            # The kernel caps the request at wmem_max and doubles it (its own bookkeeping overhead).
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * min(db.UNIX_SEND_BUFFER, wmem_max)
    finally:
        await pool.close()
    conn = await db.connect(make_settings(database_url, storage_dir))  # dedicated ones too (LISTEN, backup)
    try:
        sock = conn._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * min(db.UNIX_SEND_BUFFER, wmem_max)
    finally:
        await conn.close()
