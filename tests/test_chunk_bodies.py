"""Multi-MiB chunks: a fast client is streamed into the database, a slow one holds no connection,
and neither leaves anything behind when the body is wrong or the client goes away."""
from __future__ import annotations

import asyncio
import io
import os

import asyncpg

from tests.uploading import RawPut, create, sha256, stored

CHUNK = 4 * 1024 * 1024


SETTINGS_ENV = {"DEFAULT_CHUNK_SIZE": "4MiB", "MAX_CHUNK_SIZE": "8MiB"}


async def copies_running(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%file_chunks%' "
                               "AND state <> 'idle' AND pid <> pg_backend_pid()")


async def test_fast_and_slow_clients(client, user, conn) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(2 * CHUNK)
    upload = await create(client, user, data)

    async with RawPut(client, user, upload["id"], 0, CHUNK) as put:  # fast: streamed into a COPY
        await put.send(data[:2 * 1024 * 1024])
        await asyncio.sleep(0.3)
        assert await copies_running(conn) == 1
        await put.send(data[2 * 1024 * 1024:CHUNK])
        assert await put.status() == 201

    async with RawPut(client, user, upload["id"], 1, CHUNK) as put:  # slow: read whole, then stored
        await put.send(data[CHUNK:CHUNK + 1000])
        await asyncio.sleep(0.3)
        assert await copies_running(conn) == 0  # no database connection waits on a slow client
        await put.send(data[CHUNK + 1000:])
        assert await put.status() == 201
    assert await stored(conn, upload["id"]) == [(0, sha256(data[:CHUNK])), (1, sha256(data[CHUNK:]))]

    r = await client.put(f"/api/uploads/{upload['id']}/chunks/1", data=io.BytesIO(data[CHUNK:]), headers=user.headers)
    assert r.status == 200  # an identical repeat, recognised by its hash after the COPY met the stored row
    r = await client.put(f"/api/uploads/{upload['id']}/chunks/1", data=io.BytesIO(os.urandom(CHUNK)), headers=user.headers)
    assert r.status == 409 and (await r.json())["code"] == "CHUNK_CONFLICT"
    assert await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", upload["id"]) == 2 * CHUNK


async def test_a_streamed_chunk_that_goes_wrong_stores_nothing(client, user, conn) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(2 * CHUNK)
    upload = await create(client, user, data)
    r = await client.put(f"/api/uploads/{upload['id']}/chunks/0", data=io.BytesIO(data[:CHUNK]),
                         headers={**user.headers, "Content-SHA256": sha256(b"not this")})
    assert r.status == 422 and (await r.json())["code"] == "CHECKSUM_MISMATCH"

    async with RawPut(client, user, upload["id"], 0, CHUNK) as put:  # gone mid-stream
        await put.send(data[:3 * 1024 * 1024])
        await asyncio.sleep(0.3)
        assert await copies_running(conn) == 1
    await asyncio.sleep(0.5)
    assert await copies_running(conn) == 0
    assert await stored(conn, upload["id"]) == []
    assert await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", upload["id"]) == 0

    r = await client.put(f"/api/uploads/{upload['id']}/chunks/0", data=io.BytesIO(data[:CHUNK]),
                         headers={**user.headers, "Content-SHA256": sha256(data[:CHUNK])})
    assert r.status == 201  # and the pool's connections survived the aborted COPYs
    assert await stored(conn, upload["id"]) == [(0, sha256(data[:CHUNK]))]


async def test_a_chunked_transfer_encoding_body_is_stored_byte_for_byte(client, user, conn) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(CHUNK + 12345)
    upload = await create(client, user, data)

    async def http_chunks(part: bytes):  # type: ignore[no-untyped-def]
        for start in range(0, len(part), 100_003):  # odd sizes: no HTTP chunk lines up with a socket read
            yield part[start:start + 100_003]

    for index, part in enumerate((data[:CHUNK], data[CHUNK:])):
        r = await client.put(f"/api/uploads/{upload['id']}/chunks/{index}", data=http_chunks(part),
                             headers=user.headers)
        assert r.status == 201, await r.text()
        assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert await stored(conn, upload["id"]) == [(0, sha256(data[:CHUNK])), (1, sha256(data[CHUNK:]))]
