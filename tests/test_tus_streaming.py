"""Bodies streamed into chunk rows, partial bodies kept, one writer per upload, stalled-writer takeover
(in one process and across two), and completion exactly once."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import aiohttp

from service.keys import tus_locks_key
from tests.support import scrape
from tests.tus_support import (
    CHUNK,
    TUS,
    create,
    file_row,
    patch,
    raw_patch,
    stored_bytes,
    unlocked,
    until,
    upload_id,
)


async def _offset(conn, path: str) -> int:
    return (await file_row(conn, upload_id(path)))["bytes_received"]


async def _locked(conn, path: str) -> bool:
    return not await unlocked(conn, upload_id(path))


async def test_a_disconnect_mid_patch_keeps_every_byte_received(tus, user, conn) -> None:
    data = os.urandom(5 * CHUNK)
    path = await create(tus, user, len(data))
    sent = 2 * CHUNK + 777  # two full chunk rows and a part of the third
    request = await raw_patch(tus, user, path, 0, len(data))
    await request.send(data[:sent])
    await until(lambda: _locked(conn, path))
    await request.close()

    await until(lambda: _offset_is(conn, path, sent))
    r = await tus.head(path, headers={**user.headers, **TUS})
    assert r.headers["Upload-Offset"] == str(sent)
    assert await stored_bytes(conn, upload_id(path)) == data[:sent]

    r = await patch(tus, user, path, sent, data[sent:])  # the client resumes where it stopped
    assert r.status == 204 and await stored_bytes(conn, upload_id(path)) == data


async def test_a_body_cut_off_while_a_piece_is_stored_keeps_exactly_the_committed_bytes(tus, user, conn) -> None:
    """The database holds the first row back while the client sends more and hangs up: that row still
    commits, and what arrived after it is kept too, in order, with the offset saying exactly how much."""
    data = os.urandom(5 * CHUNK)
    path = await create(tus, user, len(data))
    sent = 2 * CHUNK + 777  # two full chunk rows and a part of the third
    request = await raw_patch(tus, user, path, 0, len(data))
    try:
        await until(lambda: _locked(conn, path))
        async with conn.transaction():  # a row of the upload's chunks cannot be inserted until this ends
            await conn.execute("SELECT 1 FROM files WHERE id = $1 FOR UPDATE", upload_id(path))
            await request.send(data[:sent])
            await until(lambda: _inserting(conn))  # the first row waits for the lock
            await request.close()
            await asyncio.sleep(0.2)
            assert await _offset(conn, path) == 0
    finally:
        await request.close()
    await until(lambda: _offset_is(conn, path, sent))
    assert await stored_bytes(conn, upload_id(path)) == data[:sent]
    r = await tus.head(path, headers={**user.headers, **TUS})
    assert r.headers["Upload-Offset"] == str(sent)


async def _inserting(conn) -> bool:
    """A chunk row's INSERT waits for a lock (asked inside a transaction: a fresh look every time)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        " AND query LIKE 'INSERT INTO file_chunks%'"
    )


async def test_a_real_server_keeps_the_bytes_of_a_client_that_hangs_up(chunkd, user, conn) -> None:
    """`chunkd serve` as deployed: the hang-up comes while the request may still be in auth or
    waiting in the socket; whatever reached the server is stored all the same."""
    server = chunkd("serve", DEFAULT_CHUNK_SIZE="1MiB")
    data = os.urandom(5 * 1024 * 1024)
    sent = 3 * 1024 * 1024 + 12345
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{server.url}/api/tus/", headers={**user.headers, **TUS, "Upload-Length": str(len(data))})
        path = "/api/tus/" + r.headers["Location"].rsplit("/", 1)[-1]
        request = await raw_patch(server, user, path, 0, len(data))
        await request.send(data[:sent])
        await request.close()
        await until(lambda: _offset_is(conn, path, sent))
        r = await http.head(server.url + path, headers={**user.headers, **TUS})
        assert r.headers["Upload-Offset"] == str(sent)
    assert await stored_bytes(conn, upload_id(path)) == data[:sent]


async def _offset_is(conn, path: str, expected: int) -> bool:
    return await _offset(conn, path) == expected


async def test_a_body_that_goes_quiet_times_out_and_keeps_its_bytes(tus_app, user, conn) -> None:
    tus = await tus_app(BODY_RATE_WINDOW="1s")
    path = await create(tus, user, 10_000)
    request = await raw_patch(tus, user, path, 0, 10_000)
    try:
        await request.send(b"q" * 1500)
        status, headers = await request.response(timeout=5)
    finally:
        await request.close()
    assert status == 408 and headers["tus-resumable"] == "1.0.0"
    assert await _offset(conn, path) == 1500


async def test_two_concurrent_patches_one_wins_the_other_is_locked_out(tus, user, conn) -> None:
    pieces, size = 100, 1000  # the first body trickles in for ~2 s, longer than a request waits for the lock
    tus.server.app[tus_locks_key].stall_after = 1.0  # a slow CI machine must not make the trickle look stalled
    path = await create(tus, user, pieces * size)
    first_body, second_body = b"A" * pieces * size, b"B" * pieces * size
    first = await raw_patch(tus, user, path, 0, len(first_body))

    async def trickle() -> None:
        for i in range(pieces):
            await first.send(first_body[i * size : (i + 1) * size])
            await asyncio.sleep(0.02)

    sender = asyncio.create_task(trickle())
    try:
        await until(lambda: _locked(conn, path))
        second = await patch(tus, user, path, 0, second_body)
        assert second.status == 423 and (await second.json())["code"] == "TUS_UPLOAD_LOCKED"
        await sender
        status, _ = await first.response()
        assert status == 204
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await first.close()
    assert await stored_bytes(conn, upload_id(path)) == first_body


async def test_a_stalled_patch_is_taken_over_by_a_head(tus, user, conn) -> None:
    data = os.urandom(10_000)
    path = await create(tus, user, len(data))
    stale = await raw_patch(tus, user, path, 0, len(data))
    try:
        await stale.send(data[:1500])  # and then nothing: the client's link died
        await until(lambda: _locked(conn, path))
        started = time.monotonic()
        r = await tus.head(path, headers={**user.headers, **TUS})
        assert r.status == 200 and r.headers["Upload-Offset"] == "1500"
        assert time.monotonic() - started < 1.4  # the stale writer let go; nobody waited for its timeout
        status, headers = await stale.response()
        assert status == 409 and headers["tus-resumable"] == "1.0.0"
    finally:
        await stale.close()
    r = await patch(tus, user, path, 1500, data[1500:])
    assert r.status == 204 and await stored_bytes(conn, upload_id(path)) == data


async def test_a_stalled_patch_is_taken_over_by_a_new_patch(tus, user, conn) -> None:
    data = os.urandom(3 * CHUNK)
    path = await create(tus, user, len(data))
    stale = await raw_patch(tus, user, path, 0, len(data))
    try:
        await stale.send(data[: CHUNK + 10])
        await until(lambda: _locked(conn, path))
        await asyncio.sleep(0.2)
        # The resuming client guessed the offset from what it had sent; the takeover made it true.
        r = await patch(tus, user, path, CHUNK + 10, data[CHUNK + 10 :])
        assert r.status == 204 and r.headers["Upload-Offset"] == str(len(data))
    finally:
        await stale.close()
    assert await stored_bytes(conn, upload_id(path)) == data


async def test_takeover_reaches_a_writer_in_another_process(chunkd, user, conn) -> None:
    """Two servers on one database: the HEAD on the second makes the first's stalled PATCH let go,
    through NOTIFY — the second process has no writer of its own to ask."""
    first, second = chunkd("serve"), chunkd("serve")
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{first.url}/api/tus/", headers={**user.headers, **TUS, "Upload-Length": "10000"})
        assert r.status == 201
        path = "/api/tus/" + r.headers["Location"].rsplit("/", 1)[-1]
        stale = await raw_patch(first, user, path, 0, 10_000)
        try:
            await stale.send(b"z" * 2500)
            await until(lambda: _locked(conn, path))
            started = time.monotonic()
            r = await http.head(second.url + path, headers={**user.headers, **TUS})
            waited = time.monotonic() - started
            assert r.status == 200 and r.headers["Upload-Offset"] == "2500"
            assert waited < 4.5  # stall_after (2 s) and a nudge, not lock_wait (5 s) nor the 30 s idle timeout
        finally:
            await stale.close()


async def test_completion_happens_exactly_once(tus, user, conn) -> None:
    ready: list[str] = []
    await conn.add_listener("files_ready", lambda *args: ready.append(args[3]))
    path = await create(tus, user, 6)
    assert (await patch(tus, user, path, 0, b"abc")).status == 204
    assert (await patch(tus, user, path, 3, b"def")).status == 204
    for _ in range(2):  # a client that did not see the answer repeats the final PATCH
        r = await patch(tus, user, path, 6, b"")
        assert r.status == 204 and r.headers["Upload-Offset"] == "6"
    assert (await patch(tus, user, path, 3, b"def")).status == 409
    await asyncio.sleep(0.2)
    assert ready == [upload_id(path)]
    assert (await file_row(conn, upload_id(path)))["status"] == "PROCESSING"


async def test_an_aborted_patch_is_counted_as_499_not_400(tus, user, conn) -> None:
    """A browser that aborts its PATCH has gone away: nginx's 499 in the metrics and the log, not a 400."""

    def patches(samples, status: str) -> float:
        return samples.get(
            (
                "chunkd_http_requests_total",
                (("method", "PATCH"), ("route", "/api/tus/{upload_id}"), ("status", status)),
            ),
            0.0,
        )

    before = await scrape(tus)
    data = os.urandom(3 * CHUNK)
    path = await create(tus, user, len(data))
    request = await raw_patch(tus, user, path, 0, len(data))
    await request.send(data[: CHUNK + 10])
    await until(lambda: _locked(conn, path))
    # as a browser's abort: the connection reset (RST), not closed in order
    request.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await request.close()
    await until(lambda: unlocked(conn, upload_id(path)), timeout=10)
    for _ in range(100):  # the request is counted once its handler has returned
        after = await scrape(tus)
        if patches(after, "499") > patches(before, "499"):
            break
        await asyncio.sleep(0.05)
    assert patches(after, "499") - patches(before, "499") == 1
    assert patches(after, "400") == patches(before, "400")
