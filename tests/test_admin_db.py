"""GET /api/admin/db: connections, pool, sizes, index usage, pg_stat_statements with and without the extension."""

from __future__ import annotations

import asyncio
import os

from service import db
from service.config import Settings
from tests.support import insert_chunk, insert_file, insert_user


async def test_health_fields_without_pg_stat_statements(client, conn, admin) -> None:
    assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'") == 0
    response = await client.get("/api/admin/db", headers=admin.headers)
    assert response.status == 200
    body = await response.json()
    assert body["pg_stat_statements"] is None
    assert "CREATE EXTENSION pg_stat_statements" in body["pg_stat_statements_reason"]

    connections = body["connections"]
    assert connections["total"] >= 2  # this test's connection and the app's
    assert connections["active"] >= 1 and connections["total"] >= connections["active"] + connections["idle"]
    pool = body["pool"]
    assert pool["max"] == 10 and pool["in_use"] >= 1 and pool["size"] == pool["free"] + pool["in_use"]
    assert pool["waiting"] == 0
    size_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
    assert body["database"]["name"] == await conn.fetchval("SELECT current_database()")
    assert abs(body["database"]["size_bytes"] - size_bytes) < 1024 * 1024 and body["database"]["size"].endswith("B")

    tables = {t["name"]: t for t in body["tables"]}
    assert {"users", "posts", "files", "file_chunks", "user_preferences", "schema_migrations"} <= set(tables)
    assert tables["users"]["total_bytes"] >= tables["users"]["table_bytes"] + tables["users"]["index_bytes"] - 8192
    indexes = {i["name"]: i for i in body["indexes"]}
    assert indexes["idx_files_type_status"]["table"] == "files"
    assert {"scans", "tuples_read", "tuples_fetched", "size_bytes", "size"} <= set(indexes["idx_users_email"])


async def test_index_usage_counts_scans(client, conn, admin) -> None:
    await conn.execute("SET enable_seqscan = off")
    await conn.fetch("SELECT id FROM users WHERE email = 'nobody@example.com'")
    await conn.execute("SELECT pg_stat_force_next_flush()")  # PG15 flushes stats at most once a second
    await conn.fetch("SELECT 1")
    body = await (await client.get("/api/admin/db", headers=admin.headers)).json()
    scans = sum(i["scans"] for i in body["indexes"] if i["table"] == "users")
    assert scans >= 1


async def test_slowest_statements_with_pg_stat_statements(client, conn, admin) -> None:
    await conn.execute("CREATE EXTENSION pg_stat_statements")
    await conn.fetchval("SELECT count(*) FROM generate_series(1, 200000) AS slow_marker")
    body = await (await client.get("/api/admin/db", headers=admin.headers)).json()
    assert body["pg_stat_statements_reason"] is None
    statements = body["pg_stat_statements"]
    assert 1 <= len(statements) <= 10
    assert statements == sorted(statements, key=lambda s: s["mean_ms"], reverse=True)
    marker = next(s for s in statements if "slow_marker" in s["query"])
    assert marker["calls"] >= 1 and marker["mean_ms"] > 0 and marker["rows"] == 1


async def test_pool_counts_tasks_waiting_for_a_connection(settings: Settings) -> None:
    pool = await db.create_pool(settings.replace(db_pool_size=1))
    try:
        async with pool.acquire():
            waiter = asyncio.create_task(wait_for_connection(pool))
            await asyncio.sleep(0.05)
            assert pool.waiting == 1
        assert await waiter == 1
        assert pool.waiting == 0
    finally:
        await pool.close()


async def wait_for_connection(pool: db.Pool) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT 1")


async def test_dead_chunks_show_as_reclaimable_and_file_chunks_vacuums_early(client, conn, admin) -> None:
    """Deleted chunks are dead rows of file_chunks and of its TOAST table until vacuumed: /api/admin/db
    says how much space they hold (one line for all of file_chunks' slots), and 0015/0216/0217 make
    autovacuum of every slot come after a fixed number of them, unthrottled."""
    slots = await conn.fetch(
        "SELECT c.reloptions, t.reloptions AS toast FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class t ON t.oid = c.reltoastrelid WHERE i.inhparent = 'file_chunks'::regclass"
    )
    assert len(slots) == 16
    for slot in slots:
        assert {"autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=500"} <= set(slot["reloptions"])
        assert {"autovacuum_vacuum_threshold=20000", "autovacuum_vacuum_cost_delay=0"} <= set(slot["toast"])
    user = await insert_user(conn)
    file = await insert_file(conn, user.id, status="UPLOADING", size=8 * 256 * 1024, chunk_size=256 * 1024)
    for index in range(8):
        await insert_chunk(conn, file["id"], index, os.urandom(256 * 1024))
    await conn.execute("DELETE FROM file_chunks WHERE file_id = $1", file["id"])  # as assembly does
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.fetch("SELECT 1")
    body = await (await client.get("/api/admin/db", headers=admin.headers)).json()
    chunks = next(t for t in body["tables"] if t["name"] == "file_chunks")
    assert chunks["dead_rows"] == 8 and chunks["toast_dead_rows"] >= 8 * 100  # ~2 KB per TOAST row
    assert chunks["reclaimable_bytes"] >= 7 * 256 * 1024  # nearly all of the 2 MiB written
    assert chunks["rows"] == 0 and "last_vacuum" in chunks
