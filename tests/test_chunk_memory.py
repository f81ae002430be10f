"""CHUNK_MEMORY bounds the upload bodies a process holds at once (each byte twice: the body, and the
driver's copy while it is stored), taken as bytes arrive, never reserved for a declared length: a body
that finds no room stops being read, goes on when memory is freed, and gets 503 SERVER_BUSY if none
is freed in time."""

from __future__ import annotations

import asyncio
import io
import json
import os

from service.keys import body_memory_key
from tests.support import scrape
from tests.uploading import create, raw_put, sha256, stored

MiB = 1024 * 1024
SETTINGS_ENV = {
    "DEFAULT_CHUNK_SIZE": "1MiB",
    "MAX_CHUNK_SIZE": "4MiB",
    "CHUNK_MEMORY": "4MiB",
    "DATABASE_POOL_TIMEOUT": "1500",
}


async def until_used(memory, expected: int) -> None:
    for _ in range(100):
        if memory.used == expected:
            return
        await asyncio.sleep(0.05)
    assert memory.used == expected


async def test_slow_bodies_hold_only_the_bytes_they_sent(client, user, conn) -> None:
    data = os.urandom(3 * MiB)
    upload = await create(client, user, data)
    memory = client.app[body_memory_key]
    async with (
        raw_put(client, user, upload["id"], 0, MiB) as first,
        raw_put(client, user, upload["id"], 1, MiB) as second,
        raw_put(client, user, upload["id"], 2, MiB) as third,
    ):
        for index, put in enumerate((first, second, third)):  # slow clients, each announcing 1 MiB
            await put.send(data[index * MiB : index * MiB + 1000])
        await until_used(memory, 3 * 2 * 1000)  # what arrived, twice; nothing for what was only announced
        assert (await scrape(client))[("chunkd_chunk_memory_bytes", (("state", "used"),))] == 6000

        for index, put in enumerate((first, second, third)):
            await put.send(data[index * MiB + 1000 : (index + 1) * MiB])
            assert await put.status() == 201
    assert memory.used == 0
    assert await stored(conn, upload["id"]) == [(i, sha256(data[i * MiB : (i + 1) * MiB])) for i in range(3)]


async def test_a_body_that_finds_no_memory_in_time_gets_503_and_nothing_is_stored(client, user, conn) -> None:
    data = os.urandom(3 * MiB)
    upload = await create(client, user, data)
    memory = client.app[body_memory_key]
    almost = MiB - 1000
    async with (
        raw_put(client, user, upload["id"], 0, MiB) as first,
        raw_put(client, user, upload["id"], 1, MiB) as second,
    ):
        await first.send(data[:almost])
        await second.send(data[MiB : MiB + almost])
        await until_used(memory, 4 * almost)  # nearly all of the 4 MiB
        async with raw_put(client, user, upload["id"], 2, MiB) as third:
            await third.send(data[2 * MiB : 2 * MiB + 200_000])
            status, headers = await third.response()
            body = await third.body(headers)
        assert status == 503 and headers["retry-after"] == "1"  # after DATABASE_POOL_TIMEOUT
        assert json.loads(body)["code"] == "SERVER_BUSY"
        await first.send(data[almost:MiB])
        await second.send(data[MiB + almost : 2 * MiB])
        assert await first.status() == 201 and await second.status() == 201
    r = await client.put(
        f"/api/uploads/{upload['id']}/chunks/2", data=io.BytesIO(data[2 * MiB :]), headers=user.headers
    )
    assert r.status == 201  # the retry finds room
    assert [i for i, _ in await stored(conn, upload["id"])] == [0, 1, 2]


async def test_a_body_waiting_for_memory_goes_on_when_it_is_freed(client, user, conn) -> None:
    data = os.urandom(3 * MiB)
    upload = await create(client, user, data)
    memory = client.app[body_memory_key]
    almost = MiB - 1000
    async with (
        raw_put(client, user, upload["id"], 0, MiB) as first,
        raw_put(client, user, upload["id"], 1, MiB) as second,
        raw_put(client, user, upload["id"], 2, MiB) as third,
    ):
        await first.send(data[:almost])
        await second.send(data[MiB : MiB + almost])
        await until_used(memory, 4 * almost)
        sending = asyncio.ensure_future(third.send(data[2 * MiB :]))  # more than fits: it waits, unread
        await asyncio.sleep(0.3)
        assert memory.used <= 4 * MiB
        await first.send(data[almost:MiB])
        assert await first.status() == 201
        await sending
        assert await third.status() == 201  # the first's memory went to the third
        await second.send(data[MiB + almost : 2 * MiB])
        assert await second.status() == 201
    assert memory.used == 0
    assert await stored(conn, upload["id"]) == [(i, sha256(data[i * MiB : (i + 1) * MiB])) for i in range(3)]


async def test_a_chunk_larger_than_the_budget_still_goes_through_alone(client, user, conn) -> None:
    data = os.urandom(4 * MiB)
    upload = await create(client, user, data, chunk_size=4 * MiB)
    r = await client.put(f"/api/uploads/{upload['id']}/chunks/0", data=io.BytesIO(data), headers=user.headers)
    assert r.status == 201, await r.text()
    assert await stored(conn, upload["id"]) == [(0, sha256(data))]


async def test_clients_that_go_away_give_their_memory_back(client, user, conn) -> None:
    data = os.urandom(3 * MiB)
    upload = await create(client, user, data)
    memory = client.app[body_memory_key]
    async with raw_put(client, user, upload["id"], 0, MiB) as first:
        async with raw_put(client, user, upload["id"], 1, MiB) as second:
            await first.send(data[:1000])
            await second.send(data[MiB : MiB + 500_000])
            await until_used(memory, 2 * (1000 + 500_000))
        await until_used(memory, 2 * 1000)  # the second went away mid-body: only the first holds bytes
        await first.send(data[1000:MiB])
        assert await first.status() == 201
    assert memory.used == 0
    assert [i for i, _ in await stored(conn, upload["id"])] == [0]
