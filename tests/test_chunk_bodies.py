"""Multi-MiB chunk bodies: read whole before anything goes to the database, stored byte for byte, and
nothing left behind when the body is wrong, stops arriving, or the client goes away."""

from __future__ import annotations

import asyncio
import io
import json
import os

import asyncpg

from service.keys import body_memory_key
from tests.uploading import create, raw_put, sha256, stored

CHUNK = 4 * 1024 * 1024


SETTINGS_ENV = {"DEFAULT_CHUNK_SIZE": "4MiB", "MAX_CHUNK_SIZE": "8MiB", "BODY_RATE_WINDOW": "2s"}


async def chunk_statements(conn: asyncpg.Connection) -> int:
    """Statements on file_chunks running in other sessions (the server's)."""
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%file_chunks%' "
        "AND state <> 'idle' AND pid <> pg_backend_pid()"
    )


async def test_a_body_is_read_whole_before_it_goes_to_the_database(client, user, conn) -> None:
    data = os.urandom(2 * CHUNK)
    upload = await create(client, user, data)
    for index in (0, 1):
        async with raw_put(client, user, upload["id"], index, CHUNK) as put:
            part = data[index * CHUNK : (index + 1) * CHUNK]
            await put.send(part[: 3 * 1024 * 1024])  # fast: most of it at once
            await asyncio.sleep(0.3)
            assert await chunk_statements(conn) == 0  # no database connection waits on the client's link
            await put.send(part[3 * 1024 * 1024 :])
            assert await put.status() == 201
    assert await stored(conn, upload["id"]) == [(0, sha256(data[:CHUNK])), (1, sha256(data[CHUNK:]))]

    r = await client.put(f"/api/uploads/{upload['id']}/chunks/1", data=io.BytesIO(data[CHUNK:]), headers=user.headers)
    assert r.status == 200  # an identical repeat, recognised by its hash
    r = await client.put(
        f"/api/uploads/{upload['id']}/chunks/1", data=io.BytesIO(os.urandom(CHUNK)), headers=user.headers
    )
    assert r.status == 409 and (await r.json())["code"] == "CHUNK_CONFLICT"
    assert await stored(conn, upload["id"]) == [(0, sha256(data[:CHUNK])), (1, sha256(data[CHUNK:]))]
    assert await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", upload["id"]) == 2 * CHUNK


async def test_a_body_that_goes_wrong_stores_nothing(client, user, conn) -> None:
    data = os.urandom(2 * CHUNK)
    upload = await create(client, user, data)
    r = await client.put(
        f"/api/uploads/{upload['id']}/chunks/0",
        data=io.BytesIO(data[:CHUNK]),
        headers={**user.headers, "Content-SHA256": sha256(b"not this")},
    )
    assert r.status == 422 and (await r.json())["code"] == "CHECKSUM_MISMATCH"

    async with raw_put(client, user, upload["id"], 0, CHUNK) as put:  # gone mid-body
        await put.send(data[: 3 * 1024 * 1024])
        await asyncio.sleep(0.3)

    async with raw_put(client, user, upload["id"], 0, CHUNK) as put:  # stops sending
        await put.send(data[: 3 * 1024 * 1024])
        status, headers = await put.response()
        body = await put.body(headers)
    assert status == 408 and json.loads(body)["code"] == "CHUNK_STALLED"

    await asyncio.sleep(0.3)
    assert client.app[body_memory_key].used == 0
    assert await stored(conn, upload["id"]) == []
    assert await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", upload["id"]) == 0
    r = await client.put(
        f"/api/uploads/{upload['id']}/chunks/0",
        data=io.BytesIO(data[:CHUNK]),
        headers={**user.headers, "Content-SHA256": sha256(data[:CHUNK])},
    )
    assert r.status == 201
    assert await stored(conn, upload["id"]) == [(0, sha256(data[:CHUNK]))]


async def test_a_chunked_transfer_encoding_body_is_stored_byte_for_byte(client, user, conn) -> None:
    data = os.urandom(CHUNK + 12345)
    upload = await create(client, user, data)

    async def http_chunks(part: bytes):
        for start in range(0, len(part), 100_003):  # odd sizes: no HTTP chunk lines up with a socket read
            yield part[start : start + 100_003]

    for index, part in enumerate((data[:CHUNK], data[CHUNK:])):
        r = await client.put(
            f"/api/uploads/{upload['id']}/chunks/{index}", data=http_chunks(part), headers=user.headers
        )
        assert r.status == 201, await r.text()
        assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert await stored(conn, upload["id"]) == [(0, sha256(data[:CHUNK])), (1, sha256(data[CHUNK:]))]
