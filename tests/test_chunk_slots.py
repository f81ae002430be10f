"""A finished file's chunks leave by TRUNCATE of their slot when no other file's rows are in it, and by
DELETE otherwise (sql/0217): the other file's chunks stay, whatever happens to the slot."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg

from service.store import backup as backup_store
from service.store import workers
from tests.support import insert_chunk, insert_file, insert_user

CHUNK = 64 * 1024


async def file_in(conn: asyncpg.Connection, user_id: str, slot: int | None = None) -> str:
    """An UPLOADING file with two chunks stored as chunkd stores them; with `slot`, one whose id falls there."""
    while True:
        file_id = (await insert_file(conn, user_id, status="UPLOADING", size=2 * CHUNK, chunk_size=CHUNK))["id"]
        if slot is None or await conn.fetchval("SELECT chunk_slot($1)", file_id) == slot:
            break
    for index in range(2):
        await insert_chunk(conn, file_id, index, os.urandom(CHUNK))
    return file_id


async def slot_state(conn: asyncpg.Connection, file_id: str) -> tuple[str, int]:
    """(the file's slot table, that table's relfilenode: TRUNCATE gives it a new one)."""
    row = await conn.fetchrow(
        "SELECT c.relname, c.relfilenode::int FROM pg_class c WHERE c.oid = (SELECT DISTINCT tableoid"
        " FROM file_chunks WHERE file_id = $1)",
        file_id,
    )
    return row["relname"], row["relfilenode"]


async def chunk_count(conn: asyncpg.Connection, file_id: str) -> int:
    return await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", file_id)


async def test_a_file_alone_in_its_slot_goes_by_truncate(conn: asyncpg.Connection) -> None:
    user = await insert_user(conn)
    file_id = await file_in(conn, user.id)
    table, before = await slot_state(conn, file_id)
    assert await conn.fetchval("SELECT remove_file_chunks($1)", file_id) == 1
    assert await chunk_count(conn, file_id) == 0
    after = await conn.fetchval("SELECT relfilenode::int FROM pg_class WHERE relname = $1", table)
    assert after != before  # truncated: new, empty files; no dead tuple left to vacuum


async def test_a_shared_slot_deletes_only_the_finished_files_rows(conn: asyncpg.Connection) -> None:
    user = await insert_user(conn)
    done = await file_in(conn, user.id)
    slot = await conn.fetchval("SELECT chunk_slot($1)", done)
    other = await file_in(conn, user.id, slot)
    table, before = await slot_state(conn, done)
    other_bytes = await conn.fetchval(
        "SELECT string_agg(data, ''::bytea ORDER BY chunk_index) FROM file_chunks WHERE file_id = $1", other
    )
    await workers.delete_chunks(conn, done)
    assert await chunk_count(conn, done) == 0
    assert await conn.fetchval("SELECT relfilenode::int FROM pg_class WHERE relname = $1", table) == before
    assert (
        await conn.fetchval(
            "SELECT string_agg(data, ''::bytea ORDER BY chunk_index) FROM file_chunks WHERE file_id = $1", other
        )
        == other_bytes
    )


async def test_a_slot_in_use_elsewhere_is_not_waited_for(conn: asyncpg.Connection, database_url: str) -> None:
    """Another session reading the slot (here: a backup's snapshot, which locks file_chunks before it is
    taken) holds TRUNCATE off: after 100 ms the rows are deleted instead, and that session still sees them."""
    user = await insert_user(conn)
    file_id = await file_in(conn, user.id)
    reader = await asyncpg.connect(database_url)
    try:
        async with reader.transaction(isolation="repeatable_read", readonly=True):
            await backup_store.export_snapshot(reader)
            started = time.monotonic()
            assert await asyncio.wait_for(conn.fetchval("SELECT remove_file_chunks($1)", file_id), 10) == 0
            assert time.monotonic() - started < 5
            assert await chunk_count(conn, file_id) == 0
            assert await chunk_count(reader, file_id) == 2  # the snapshot's view is intact
    finally:
        await reader.close()


async def test_a_file_whose_rows_are_in_several_slots_empties_each(conn: asyncpg.Connection) -> None:
    """A tus final's rows keep their partials' slots (concatenation renames rows, it never moves bytes)."""
    user = await insert_user(conn)
    final = await file_in(conn, user.id)
    slot = await conn.fetchval("SELECT chunk_slot($1)", final)
    await conn.execute(
        "INSERT INTO file_chunks (file_id, chunk_index, slot, data) VALUES ($1, 2, $2, 'x')", final, (slot + 1) % 16
    )
    assert await conn.fetchval("SELECT count(DISTINCT tableoid) FROM file_chunks WHERE file_id = $1", final) == 2
    assert await conn.fetchval("SELECT remove_file_chunks($1)", final) == 2
    assert await chunk_count(conn, final) == 0
