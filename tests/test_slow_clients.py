"""Slow links and greedy clients (issue 11): a trickling body holds no pooled connection and no memory
beyond what it sent, a greedy user is answered 429 while others go on, a body below the minimum rate
ends with 408 (tus keeping exactly what arrived, a native chunk nothing), and idle connections or a
Content-Length far above what is sent cost nobody else anything."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import time
from collections.abc import AsyncIterator

from service.app import create_app
from service.db import bulk_share
from service.keys import body_memory_key
from tests.support import make_settings
from tests.tus_support import TUS, file_row, raw_patch, stored_bytes, upload_id
from tests.tus_support import create as tus_create
from tests.uploading import create, raw_put, stored

KiB, MiB = 1024, 1024 * 1024
POOL = 2


async def app_client(aiohttp_client, database_url, storage_dir, **env: str):
    base = {
        "DEFAULT_CHUNK_SIZE": "64KiB",
        "MAX_CHUNK_SIZE": "1MiB",
        "DATABASE_POOL_SIZE": str(POOL),
        "DATABASE_POOL_TIMEOUT": "3000",
    }
    return await aiohttp_client(create_app(make_settings(database_url, storage_dir, **{**base, **env})))


@contextlib.asynccontextmanager
async def trickling(requests: list, every: float = 0.2) -> AsyncIterator[None]:
    """Each request sends one byte every `every` seconds for as long as the block lasts."""

    async def trickle(request) -> None:
        while True:
            await request.send(b"t")
            await asyncio.sleep(every)

    tasks = [asyncio.create_task(trickle(r)) for r in requests]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def timed(request) -> tuple[float, int]:
    started = time.monotonic()
    response = await request
    await response.read()
    return time.monotonic() - started, response.status


async def test_trickling_patches_and_puts_leave_other_users_fast(
    aiohttp_client,
    database_url,
    storage_dir,
    make_user,
    user,
) -> None:
    client = await app_client(aiohttp_client, database_url, storage_dir)
    slow = await make_user()
    count = POOL + 5
    paths = [await tus_create(client, slow, 10 * MiB) for _ in range(count)]
    native = await create(client, slow, os.urandom(count * 64 * KiB))
    patches = [await raw_patch(client, slow, path, 0, 10 * MiB) for path in paths]
    puts = [await raw_put(client, slow, native["id"], i, 64 * KiB).__aenter__() for i in range(count)]
    try:
        async with trickling(patches + puts):
            await asyncio.sleep(1.0)  # every trickler is inside its handler, reading its body
            assert client.app[body_memory_key].users[slow.id].requests == 2 * count
            data = os.urandom(MiB)
            upload = await create(client, user, data, chunk_size=MiB)
            me = await timed(client.get("/api/users/me", headers=user.headers))
            put = await timed(
                client.put(f"/api/uploads/{upload['id']}/chunks/0", data=io.BytesIO(data), headers=user.headers)
            )
            assert me[1] == 200 and put[1] == 201
            assert me[0] < 1 and put[0] < 1, (me, put)
    finally:
        for request in patches:
            await request.close()
        for put_ in puts:
            await put_.__aexit__(None, None, None)


async def test_uploads_stuck_storing_leave_status_polls_a_connection(
    aiohttp_client, database_url, storage_dir, make_user, user, conn
) -> None:
    """Bulk work (storing a chunk, a tus piece, an assembly) holds at most bulk_share(pool) connections:
    with every chunk INSERT stuck behind a table lock, as many PUTs as that share hold a connection
    each, the others wait for the share, and a status poll, /users/me and a new upload still answer."""
    size = 5
    client = await app_client(
        aiohttp_client, database_url, storage_dir, DATABASE_POOL_SIZE=str(size), DATABASE_POOL_TIMEOUT="60000"
    )
    uploader = await make_user()
    mine = await create(client, user, b"polled")
    chunks = 8
    native = await create(client, uploader, os.urandom(chunks * 64 * KiB))
    url = f"/api/uploads/{native['id']}/chunks"
    async with conn.transaction():
        await conn.execute("LOCK TABLE file_chunks IN EXCLUSIVE MODE")  # every chunk INSERT waits for it
        puts = [
            asyncio.create_task(timed(client.put(f"{url}/{i}", data=os.urandom(64 * KiB), headers=uploader.headers)))
            for i in range(chunks)
        ]
        deadline = time.monotonic() + 30
        while (stuck := await stuck_inserts(conn)) < bulk_share(size) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # had the share let one more through, it would be stuck by now
        assert await stuck_inserts(conn) == stuck == bulk_share(size) < size
        poll = await timed(client.get(f"/api/files/{mine['id']}", headers=user.headers))
        me = await timed(client.get("/api/users/me", headers=user.headers))
        new = await timed(client.post("/api/uploads", json={"filename": "n", "size": 1}, headers=user.headers))
        assert (poll[1], me[1], new[1]) == (200, 200, 201)
        assert poll[0] < 1 and me[0] < 1 and new[0] < 1, (poll, me, new)
        assert not any(put.done() for put in puts)
    assert [status for _, status in await asyncio.gather(*puts)] == [201] * chunks


async def stuck_inserts(conn) -> int:
    """Connections waiting for a lock to insert a chunk. Inside a transaction pg_stat_activity is read
    once and kept: the snapshot is dropped first."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO file_chunks%'"
    )


async def test_a_greedy_user_gets_429_while_another_users_put_succeeds(
    aiohttp_client,
    database_url,
    storage_dir,
    make_user,
    user,
) -> None:
    client = await app_client(aiohttp_client, database_url, storage_dir, USER_INFLIGHT_REQUESTS="3")
    greedy = await make_user()
    data = os.urandom(5 * 64 * KiB)
    mine = await create(client, greedy, data)
    path = await tus_create(client, greedy, 1000)
    puts = [await raw_put(client, greedy, mine["id"], i, 64 * KiB).__aenter__() for i in range(3)]
    try:
        async with trickling(puts):
            await asyncio.sleep(0.5)
            r = await client.put(
                f"/api/uploads/{mine['id']}/chunks/3", data=data[3 * 64 * KiB : 4 * 64 * KiB], headers=greedy.headers
            )
            assert r.status == 429 and r.headers["Retry-After"] == "2"
            assert (await r.json())["code"] == "TOO_MANY_UPLOADS"
            r = await client.patch(
                path,
                data=b"x" * 1000,
                headers={
                    **greedy.headers,
                    **TUS,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            assert r.status == 429 and r.headers["Tus-Resumable"] == "1.0.0"

            other = os.urandom(64 * KiB)
            upload = await create(client, user, other)
            r = await client.put(f"/api/uploads/{upload['id']}/chunks/0", data=other, headers=user.headers)
            assert r.status == 201
    finally:
        for put in puts:
            await put.__aexit__(None, None, None)
    r = await client.put(
        f"/api/uploads/{mine['id']}/chunks/3", data=data[3 * 64 * KiB : 4 * 64 * KiB], headers=greedy.headers
    )
    assert r.status == 201  # once its other requests are gone, the greedy user is served again


async def test_a_patch_below_the_minimum_rate_ends_408_keeping_an_exact_offset(
    aiohttp_client,
    database_url,
    storage_dir,
    user,
    conn,
) -> None:
    client = await app_client(aiohttp_client, database_url, storage_dir, BODY_MIN_RATE="16KiB", BODY_RATE_WINDOW="2s")
    data = os.urandom(MiB)
    path = await tus_create(client, user, len(data))
    request = await raw_patch(client, user, path, 0, len(data))
    sent = 150 * KiB + 7  # two full rows of 64 KiB and a part of the third, then 1 KiB/s
    try:
        await request.send(data[:sent])
        started = time.monotonic()
        status = None
        while status is None:
            await request.send(data[sent : sent + 100])
            sent += 100
            with contextlib.suppress(asyncio.TimeoutError):
                status, headers = await request.response(timeout=0.1)
            assert time.monotonic() - started < 10, "no 408 in time"
    finally:
        await request.close()
    assert status == 408 and headers["tus-resumable"] == "1.0.0"
    offset = (await file_row(conn, upload_id(path)))["bytes_received"]
    kept = await stored_bytes(conn, upload_id(path))
    assert kept == data[:offset] and 150 * KiB + 7 <= offset <= sent  # what arrived, exactly
    r = await client.head(path, headers={**user.headers, **TUS})
    assert r.headers["Upload-Offset"] == str(offset)


async def test_a_chunk_below_the_minimum_rate_ends_408_keeping_nothing(
    aiohttp_client,
    database_url,
    storage_dir,
    user,
    conn,
) -> None:
    client = await app_client(aiohttp_client, database_url, storage_dir, BODY_MIN_RATE="16KiB", BODY_RATE_WINDOW="2s")
    data = os.urandom(64 * KiB)
    upload = await create(client, user, data)
    async with raw_put(client, user, upload["id"], 0, len(data)) as put:
        await put.send(data[:1000])
        async with trickling([put], every=0.1):
            status, headers = await asyncio.wait_for(put.response(), 10)
            body = await put.body(headers)
    assert status == 408 and json.loads(body)["code"] == "CHUNK_STALLED"
    assert await stored(conn, upload["id"]) == []
    assert client.app[body_memory_key].used == 0


async def test_content_length_far_above_the_data_sent(aiohttp_client, database_url, storage_dir, user, conn) -> None:
    client = await app_client(aiohttp_client, database_url, storage_dir, BODY_RATE_WINDOW="1s")
    data = os.urandom(64 * KiB)
    upload = await create(client, user, data)
    async with raw_put(client, user, upload["id"], 0, len(data)) as put:  # announces 64 KiB, sends 10 and waits
        await put.send(data[:10])
        status, headers = await asyncio.wait_for(put.response(), 10)
        body = await put.body(headers)
    assert status == 408 and json.loads(body)["code"] == "CHUNK_STALLED"

    path = await tus_create(client, user, 1000)
    request = await raw_patch(client, user, path, 0, 100 * MiB)  # more than the whole upload: refused at once
    try:
        status, _ = await request.response()
    finally:
        await request.close()
    assert status == 413
    request = await raw_patch(client, user, path, 0, 1000)  # within it, but only 10 bytes come
    try:
        await request.send(b"0123456789")
        status, _ = await request.response()
    finally:
        await request.close()
    assert status == 408 and (await file_row(conn, upload_id(path)))["bytes_received"] == 10
    assert await stored(conn, upload["id"]) == []


async def test_500_idle_connections_cost_other_users_nothing(
    aiohttp_client,
    database_url,
    storage_dir,
    user,
) -> None:
    client = await app_client(aiohttp_client, database_url, storage_dir)
    host, port = client.server.host, client.server.port
    idle = [await asyncio.open_connection(host, port) for _ in range(500)]
    try:
        for _, writer in idle[:250]:  # half of them start a request line and stop
            writer.write(b"PUT /api/uploads/x/chunks/0 HTTP/1.1\r\nHost: x\r\n")
        await asyncio.sleep(0.3)
        data = os.urandom(64 * KiB)
        upload = await create(client, user, data)
        me = await timed(client.get("/api/users/me", headers=user.headers))
        put = await timed(client.put(f"/api/uploads/{upload['id']}/chunks/0", data=data, headers=user.headers))
        assert me[1] == 200 and put[1] == 201 and me[0] < 1 and put[0] < 1, (me, put)
    finally:
        for _, writer in idle:
            writer.close()
