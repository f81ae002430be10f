"""CHUNK_MEMORY bounds the chunk bodies a process holds at once (each twice: the body, and the driver's
copy while it is stored): a PUT beyond it waits with its body unread, goes on when memory is freed,
and gets 503 SERVER_BUSY if none is freed in time."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os

from service.keys import chunk_memory_key
from tests.support import scrape
from tests.uploading import create, raw_put, sha256, stored

MiB = 1024 * 1024


async def admitted(memory, used: int) -> None:  # type: ignore[no-untyped-def]
    """Until the PUTs sent so far hold `used` bytes: on a busy machine the server takes its time to read
    their heads, and the order they are admitted in is what each test is about."""
    for _ in range(300):
        if memory.used == used:
            return
        await asyncio.sleep(0.05)
    assert memory.used == used
SETTINGS_ENV = {"DEFAULT_CHUNK_SIZE": "1MiB", "MAX_CHUNK_SIZE": "4MiB", "CHUNK_MEMORY": "4MiB",
                "DATABASE_POOL_TIMEOUT": "1500"}


async def test_a_chunk_beyond_the_budget_waits_for_memory_to_be_freed(client, user, conn) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 * MiB)
    upload = await create(client, user, data)
    memory = client.app[chunk_memory_key]
    async with contextlib.AsyncExitStack() as stack:
        puts = []
        for index in range(3):  # slow clients, one after the other: each body is read whole
            put = await stack.enter_async_context(raw_put(client, user, upload["id"], index, MiB))
            await put.send(data[index * MiB:index * MiB + 1000])
            await admitted(memory, min(index + 1, 2) * 2 * MiB)
            puts.append(put)
        first, second, third = puts
        await asyncio.sleep(0.3)
        assert memory.used == 4 * MiB  # two admitted; the third waits, its body unread
        assert (await scrape(client))[("chunkd_chunk_memory_bytes", (("state", "used"),))] == 4 * MiB

        await first.send(data[1000:MiB])
        assert await first.status() == 201
        await third.send(data[2 * MiB + 1000:])  # the first's memory went to the third
        assert await third.status() == 201
        await second.send(data[MiB + 1000:2 * MiB])
        assert await second.status() == 201
    assert memory.used == 0
    assert await stored(conn, upload["id"]) == [(i, sha256(data[i * MiB:(i + 1) * MiB])) for i in range(3)]


async def test_a_chunk_that_finds_no_memory_in_time_gets_503_and_nothing_is_stored(client, user, conn) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 * MiB)
    upload = await create(client, user, data)
    memory = client.app[chunk_memory_key]
    async with raw_put(client, user, upload["id"], 0, MiB) as first, raw_put(client, user, upload["id"], 1, MiB) as second:
        await first.send(data[:1000])
        await second.send(data[MiB:MiB + 1000])
        await admitted(memory, 4 * MiB)
        async with raw_put(client, user, upload["id"], 2, MiB) as third:
            await third.send(data[2 * MiB:2 * MiB + 1000])
            status, headers = await third.response()
            body = await third.body(headers)
        assert status == 503 and headers["retry-after"] == "1"  # after DATABASE_POOL_TIMEOUT
        assert json.loads(body)["code"] == "SERVER_BUSY"
        await first.send(data[1000:MiB])
        await second.send(data[MiB + 1000:2 * MiB])
        assert await first.status() == 201 and await second.status() == 201
    r = await client.put(f"/api/uploads/{upload['id']}/chunks/2", data=io.BytesIO(data[2 * MiB:]), headers=user.headers)
    assert r.status == 201  # the retry finds room
    assert [i for i, _ in await stored(conn, upload["id"])] == [0, 1, 2]


async def test_a_chunk_larger_than_the_budget_still_goes_through_alone(client, user, conn) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(4 * MiB)
    upload = await create(client, user, data, chunk_size=4 * MiB)
    r = await client.put(f"/api/uploads/{upload['id']}/chunks/0", data=io.BytesIO(data), headers=user.headers)
    assert r.status == 201, await r.text()
    assert await stored(conn, upload["id"]) == [(0, sha256(data))]


async def test_clients_that_go_away_give_their_memory_back(client, user, conn) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 * MiB)
    upload = await create(client, user, data)
    memory = client.app[chunk_memory_key]
    async with raw_put(client, user, upload["id"], 0, MiB) as first:
        async with raw_put(client, user, upload["id"], 1, MiB) as second, \
                raw_put(client, user, upload["id"], 2, MiB) as third:
            await first.send(data[:1000])
            await admitted(memory, 2 * MiB)
            await second.send(data[MiB:MiB + 1000])
            await admitted(memory, 4 * MiB)
            await third.send(data[2 * MiB:2 * MiB + 1000])
            await asyncio.sleep(0.3)
            assert memory.used == 4 * MiB
        # the second went away mid-body, the third while it waited for memory
        await admitted(memory, 2 * MiB)  # only the first still holds its chunk
        await first.send(data[1000:MiB])
        assert await first.status() == 201
    assert memory.used == 0
    assert [i for i, _ in await stored(conn, upload["id"])] == [0]
