"""Faults: PostgreSQL restarted under uploads, processing, long-polls and event streams, and the server
killed mid-upload. Each time the client resumes and the file completes with exactly its bytes.

The tests share one PostgreSQL cluster of their own (the suite's is not theirs to stop), with a fresh
migrated database each; `chunkd serve` runs as a real process unless the test needs to shorten a timer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from service import migrate
from service.app import create_app
from service.db import ensure_database
from service.embedded import EmbeddedPostgres
from service.handlers import files as files_handlers
from service.store.files import mark_ready
from tests.support import FAST, JWT_SECRET, ChunkdProcess, RawRequest, User, insert_user, make_settings, scratch_dir
from tests.tus_support import STREAM, TUS, raw_patch, stored_bytes, until, upload_id
from tests.tus_support import create as tus_create
from tests.uploading import UPLOAD_ENV, create, put_chunks, sha256, wait_for_status

MiB = 1024 * 1024
LEASE = 3  # WORKER_LEASE of UPLOAD_ENV


@pytest.fixture(scope="module")
def pg() -> Iterator[EmbeddedPostgres]:
    base = scratch_dir("chunkd-test-faults-")
    server = EmbeddedPostgres(base, server_options=FAST)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Site:
    """One test's database on the restartable cluster, its storage, and a user with a token."""

    pg: EmbeddedPostgres
    url: str
    storage: Path
    user: User

    def serve(self, **extra: str) -> ChunkdProcess:
        env = {
            "DATABASE_URL": self.url,
            "STORAGE_DIR": str(self.storage),
            "JWT_SECRET": JWT_SECRET,
            **UPLOAD_ENV,
            **extra,
        }
        return ChunkdProcess(env, "serve").start()

    async def stop_database(self) -> None:
        await asyncio.to_thread(self.pg.stop)

    async def start_database(self) -> None:
        await asyncio.to_thread(self.pg.start)

    async def execute_function(self, function, *args: object) -> object:
        conn = await asyncpg.connect(self.url)
        try:
            return await function(conn, *args)
        finally:
            await conn.close()

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record:
        conn = await asyncpg.connect(self.url)  # a connection per look: the server restarts under us
        try:
            return await conn.fetchrow(query, *args)
        finally:
            await conn.close()


@pytest.fixture
async def site(pg: EmbeddedPostgres, storage_dir: Path) -> AsyncIterator[Site]:
    if not pg.running():
        pg.start()  # a failed test may have left it stopped
    name = f"faults_{uuid.uuid4().hex}"
    await ensure_database(pg.url("postgres"), name)
    url = pg.url(name)
    conn = await asyncpg.connect(url)
    try:
        await migrate.deploy(conn)
        user = await insert_user(conn, make_settings(url, storage_dir))
    finally:
        await conn.close()
    yield Site(pg, url, storage_dir, user)
    if not pg.running():
        pg.start()
    admin = await asyncpg.connect(pg.url("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
def serve(site: Site) -> Iterator:
    """Factory of `chunkd serve` processes on the site; all stopped at the end."""
    started: list[ChunkdProcess] = []

    def start(**env: str) -> ChunkdProcess:
        started.append(site.serve(**env))
        return started[-1]

    yield start
    for process in started:
        process.stop()
        print(process.output())  # shown when the test fails
        process.log.close()
        os.unlink(process.log.name)


def http(server: ChunkdProcess) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url=server.url, timeout=aiohttp.ClientTimeout(total=60))


async def problem(response: aiohttp.ClientResponse) -> dict:
    assert response.headers["Content-Type"].startswith("application/problem+json"), await response.text()
    return await response.json()


async def assert_database_unavailable(response: aiohttp.ClientResponse) -> None:
    assert response.status == 503, await response.text()
    assert (await problem(response))["code"] == "DATABASE_UNAVAILABLE"


async def download(client: aiohttp.ClientSession, user: User, file_id: str) -> bytes:
    r = await client.get(f"/api/files/{file_id}/content", headers=user.headers)
    assert r.status == 200, await r.text()
    return await r.read()


async def finish_and_compare(client, user, upload: dict, data: bytes, missing: list[int]) -> None:
    """Resume: send the missing chunks, complete, wait for COMPLETED, and download identical bytes."""
    await put_chunks(client, user, upload, data, missing)
    r = await client.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)
    assert r.status == 202, await r.text()
    body = await wait_for_status(client, user, upload["id"], timeout=20)
    assert body["status"] == "COMPLETED", body["error"]
    assert sha256(await download(client, user, upload["id"])) == sha256(data)


# 1. PostgreSQL restarted between the chunks of a native upload ---------------------------------------
async def test_native_upload_resumes_after_a_database_restart(site: Site, serve) -> None:
    server = serve()
    user = site.user
    data = os.urandom(3 * MiB)  # 48 chunks of 64 KiB
    async with http(server) as client:
        upload = await create(client, user, data, "restart.bin", sha256=sha256(data))
        half = upload["total_chunks"] // 2
        await put_chunks(client, user, upload, data, list(range(half)))

        await site.stop_database()
        started = time.monotonic()
        chunk = data[half * upload["chunk_size"] : (half + 1) * upload["chunk_size"]]
        await assert_database_unavailable(
            await client.put(f"/api/uploads/{upload['id']}/chunks/{half}", data=chunk, headers=user.headers)
        )
        r = await client.get(f"/api/uploads/{upload['id']}", headers=user.headers)
        await assert_database_unavailable(r)
        assert r.headers["Retry-After"] == "1"
        await assert_database_unavailable(await client.get("/readyz"))
        assert time.monotonic() - started < 5  # refused at once, not after a hang

        await site.start_database()
        r = await client.get(f"/api/uploads/{upload['id']}", headers=user.headers)  # the very first request
        assert r.status == 200, await r.text()
        state = await r.json()
        assert state["missing"] == list(range(half, upload["total_chunks"]))
        assert state["bytes_received"] == half * upload["chunk_size"]

        await put_chunks(client, user, upload, data, state["missing"])
        completed = time.monotonic()
        r = await client.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)
        assert r.status == 202, await r.text()
        body = await wait_for_status(client, user, upload["id"], timeout=20)
        assert body["status"] == "COMPLETED", body["error"]
        # Woken by NOTIFY on its new LISTEN connection: its next poll would come seconds later.
        assert time.monotonic() - completed < 3
        assert body["metadata"]["sha256"] == sha256(data)
        assert sha256(await download(client, user, upload["id"])) == sha256(data)


async def test_chunks_in_flight_when_the_database_stops_get_201_or_503(site: Site, serve) -> None:
    """Six clients PUT chunks in parallel and go on while the database stops under them: each answer
    is 201 (then the chunk is kept) or 503, never a 500; afterwards `missing` is the whole truth."""
    server = serve()
    user = site.user
    data = os.urandom(6 * MiB)  # 96 chunks of 64 KiB
    async with http(server) as client:
        upload = await create(client, user, data, "parallel.bin", sha256=sha256(data))
        size, queue, answers = upload["chunk_size"], list(range(upload["total_chunks"])), {}

        async def sender() -> None:
            while queue:
                i = queue.pop(0)
                r = await client.put(
                    f"/api/uploads/{upload['id']}/chunks/{i}",
                    data=data[i * size : (i + 1) * size],
                    headers={**user.headers, "Content-SHA256": sha256(data[i * size : (i + 1) * size])},
                )
                answers[i] = r.status
                if r.status != 201:
                    await assert_database_unavailable(r)

        async def stop_midway() -> None:
            while len(answers) < 30:
                await asyncio.sleep(0.005)
            await site.stop_database()

        await asyncio.gather(stop_midway(), *(sender() for _ in range(6)))
        assert set(answers.values()) == {201, 503}
        await site.start_database()

        r = await client.get(f"/api/uploads/{upload['id']}", headers=user.headers)
        assert r.status == 200, await r.text()
        missing = (await r.json())["missing"]
        assert not {i for i, status in answers.items() if status == 201} & set(missing)  # a 201 is kept
        await finish_and_compare(client, user, upload, data, missing)


# 2. PostgreSQL restarted while the worker processes a file ------------------------------------------
async def test_a_file_being_processed_survives_a_database_restart(site: Site, serve) -> None:
    server = serve()
    user = site.user
    data = os.urandom(2 * MiB)
    async with http(server) as client:
        upload = await create(client, user, data, "processing.bin", sha256=sha256(data))
        await put_chunks(client, user, upload, data)
        # The worker claims the file, then waits for its chunks behind this lock: a file surely in the
        # middle of processing when the database goes. (mark_ready is what /complete does.)
        blocker = await asyncpg.connect(site.url)
        await blocker.execute("BEGIN; LOCK TABLE file_chunks IN ACCESS EXCLUSIVE MODE")
        await site.execute_function(mark_ready, upload["id"])
        await until(lambda: worker_waits_for_chunks(site, upload["id"]))

        await site.stop_database()
        blocker.terminate()
        await asyncio.sleep(LEASE + 0.5)  # down longer than a lease: the worker still holds its file after
        await site.start_database()
        restarted = time.monotonic()
        body = await wait_for_status(client, user, upload["id"], timeout=20)
        assert body["status"] == "COMPLETED", body["error"]
        assert time.monotonic() - restarted < 5  # settled within 2 s of the restart, taken again 1 s later
        assert sha256(await download(client, user, upload["id"])) == sha256(data)
    row = await site.fetchrow("SELECT attempts, worker_id FROM files WHERE id = $1", upload["id"])
    assert (row["attempts"], row["worker_id"]) == (1, None)  # the interrupted attempt was not the file's fault


async def worker_waits_for_chunks(site: Site, file_id: str) -> bool:
    row = await site.fetchrow(
        "SELECT (SELECT worker_id FROM files WHERE id = $1) AS worker_id,"
        "       (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        "           AND query LIKE '%FROM file_chunks%') AS waiting",
        file_id,
    )
    return row["worker_id"] is not None and row["waiting"] > 0


# 3. PostgreSQL restarted under a tus PATCH ------------------------------------------------------------
@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "with-checksum"])
async def test_tus_upload_resumes_from_the_committed_offset_after_a_database_restart(
    site: Site,
    serve,
    checksum: bool,
) -> None:
    """Without Upload-Checksum every chunk row is committed as it comes; with it the body is all or
    nothing (kept outside the database until it is whole and verified). Either way HEAD after the restart gives exactly the bytes that were committed."""
    server = serve()
    user = site.user
    data = os.urandom(3 * MiB)
    tus_headers = {**user.headers, **TUS}
    async with http(server) as client:
        path = await tus_create(client, user, len(data))
        file_id = upload_id(path)
        r = await client.patch(
            path, data=io.BytesIO(data[:MiB]), headers={**tus_headers, **STREAM, "Upload-Offset": "0"}
        )
        assert r.status == 204 and r.headers["Upload-Offset"] == str(MiB)

        # A second PATCH is half-way through its body when the database stops.
        verified = {"Upload-Checksum": "sha256 " + base64.b64encode(hashlib.sha256(data[MiB:]).digest()).decode()}
        request = await raw_patch(server, user, path, MiB, len(data) - MiB, **(verified if checksum else {}))
        await request.send(data[MiB : MiB + MiB // 2])
        if checksum:  # the unverified body waits outside the database (memory, a temporary file)...
            await asyncio.sleep(0.5)
        else:
            await until(lambda: offset_at_least(site, file_id, MiB + MiB // 4))
        await site.stop_database()
        # More bytes: the server must write, and cannot (with a checksum, once the body is whole and verified).
        await request.send(data[MiB + MiB // 2 :] if checksum else data[MiB + MiB // 2 : 2 * MiB])
        status, _ = await request.response()
        assert status == 503
        await request.close()
        r = await client.head(path, headers=tus_headers)
        assert r.status == 503 and r.headers["Tus-Resumable"] == "1.0.0"

        await site.start_database()
        r = await client.head(path, headers=tus_headers)
        assert r.status == 200, await r.text()
        offset = int(r.headers["Upload-Offset"])
        if checksum:
            assert offset == MiB  # the unverified body left nothing behind
        else:
            assert MiB + MiB // 4 <= offset <= 2 * MiB
        await resume_tus_and_compare(site, client, user, path, file_id, data, offset, tus_headers)


async def resume_tus_and_compare(
    site: Site,
    client,
    user,
    path: str,
    file_id: str,
    data: bytes,
    offset: int,
    tus_headers: dict[str, str],
) -> None:
    """The rows hold exactly the first `offset` bytes; PATCH the rest, wait for COMPLETED, download the same."""
    conn = await asyncpg.connect(site.url)
    try:
        assert await stored_bytes(conn, file_id) == data[:offset]  # exactly the committed bytes, no more
    finally:
        await conn.close()
    r = await client.patch(
        path, data=io.BytesIO(data[offset:]), headers={**tus_headers, **STREAM, "Upload-Offset": str(offset)}
    )
    assert r.status == 204 and r.headers["Upload-Offset"] == str(len(data))
    body = await wait_for_status(client, user, file_id, timeout=20)
    assert body["status"] == "COMPLETED", body["error"]
    assert sha256(await download(client, user, file_id)) == sha256(data)


async def offset_at_least(site: Site, file_id: str, offset: int) -> bool:
    return (await site.fetchrow("SELECT bytes_received FROM files WHERE id = $1", file_id))[0] >= offset


# 4. Long-polls and event streams across a restart -----------------------------------------------------
async def test_waiting_clients_get_an_answer_across_a_database_restart(site: Site, serve) -> None:
    server = serve()
    user = site.user
    data = os.urandom(256 * 1024)
    async with http(server) as client:
        upload = await create(client, user, data, "waited.bin")
        file_url = f"/api/files/{upload['id']}"
        events = await client.get(f"{file_url}/events", headers=user.headers)
        assert events.status == 200
        assert await next_event(events) == ("status", "UPLOADING")
        poll = asyncio.create_task(client.get(file_url, params={"wait": "2"}, headers=user.headers))
        await asyncio.sleep(0.3)  # the long-poll has read the file and waits

        await site.stop_database()
        started = time.monotonic()
        r = await poll
        assert time.monotonic() - started < 3  # its own deadline, then an answer: no hang
        await assert_database_unavailable(r)  # its last look at the file found no database
        await asyncio.sleep(1)
        await site.start_database()

        # Status changes reach the waiting stream and a new long-poll by NOTIFY again, at once: the
        # LISTEN connection is back (without it they would wait for a 5 s re-read or a 15 s keep-alive).
        poll = asyncio.create_task(client.get(file_url, params={"wait": "10"}, headers=user.headers))
        await put_chunks(client, user, upload, data)
        completed = time.monotonic()
        r = await client.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)
        assert r.status == 202, await r.text()
        r = await poll
        assert r.status == 200 and (await r.json())["status"] in ("PROCESSING", "COMPLETED")
        assert await next_event(events) == ("status", "PROCESSING")
        assert await next_event(events) == ("status", "COMPLETED")
        assert time.monotonic() - completed < 4
        assert await events.content.read() == b""  # the stream ends after the final status
        events.release()


async def next_event(response: aiohttp.ClientResponse, timeout: float = 10) -> tuple[str, str | None]:
    """The next server-sent event as (event, status of its data); keep-alive comments skipped."""
    event = data = None
    while True:
        line = (await asyncio.wait_for(response.content.readline(), timeout)).decode()
        if line == "":
            return "end", None
        line = line.rstrip("\n")
        if line == "" and event is not None:
            return event, (json.loads(data)["status"] if event == "status" and data else data)
        key, _, value = line.partition(": ")
        if key == "event":
            event = value
        elif key == "data":
            data = value


async def test_an_event_stream_that_cannot_reread_ends_with_a_problem_event(
    site: Site,
    aiohttp_client,
    monkeypatch,
) -> None:
    """The stream re-reads the file at every keep-alive (shortened here): with the database gone at
    that moment it says so in an `error` event and ends, a clean end EventSource reconnects after."""
    monkeypatch.setattr(files_handlers, "SSE_KEEPALIVE", 0.3)
    client = await aiohttp_client(create_app(make_settings(site.url, site.storage, **UPLOAD_ENV)))
    user = site.user
    upload = await create(client, user, b"x" * 1000, "streamed.bin")
    events = await client.get(f"/api/files/{upload['id']}/events", headers=user.headers)
    assert await next_event(events) == ("status", "UPLOADING")
    await site.stop_database()
    event, data = await next_event(events)
    assert event == "error" and data is not None and json.loads(data)["code"] == "DATABASE_UNAVAILABLE"
    assert await next_event(events) == ("end", None)
    await site.start_database()


# 5. The server killed mid-upload -------------------------------------------------------------------------
async def test_native_upload_resumes_on_a_new_server_after_a_kill(site: Site, serve) -> None:
    user = site.user
    data = os.urandom(3 * MiB)
    first = serve()
    async with http(first) as client:
        upload = await create(client, user, data, "killed.bin", sha256=sha256(data))
        await put_chunks(client, user, upload, data, list(range(20)))
    size = upload["chunk_size"]
    request = await RawRequest.open(
        first, "PUT", f"/api/uploads/{upload['id']}/chunks/20", {**user.headers, "Content-Length": str(size)}
    )
    await request.send(data[20 * size : 20 * size + size // 2])  # chunk 20 is half-way when the server dies
    first.kill()
    await request.close()

    second = serve()
    async with http(second) as client:
        r = await client.get(f"/api/uploads/{upload['id']}", headers=user.headers)
        assert r.status == 200, await r.text()
        state = await r.json()
        assert state["missing"] == list(range(20, upload["total_chunks"]))  # half a chunk is no chunk
        await finish_and_compare(client, user, upload, data, state["missing"])


async def test_tus_upload_resumes_on_a_new_server_after_a_kill(site: Site, serve) -> None:
    user = site.user
    tus_headers = {**user.headers, **TUS}
    data = os.urandom(3 * MiB)
    first = serve()
    async with http(first) as client:
        path = await tus_create(client, user, len(data))
    file_id = upload_id(path)
    request = await raw_patch(first, user, path, 0, len(data))
    await request.send(data[: MiB + MiB // 2])
    await until(lambda: offset_at_least(site, file_id, MiB))
    first.kill()
    await request.close()

    second = serve()
    async with http(second) as client:
        r = await client.head(path, headers=tus_headers)
        assert r.status == 200, await r.text()
        offset = int(r.headers["Upload-Offset"])
        assert MiB <= offset <= MiB + MiB // 2
        await resume_tus_and_compare(site, client, user, path, file_id, data, offset, tus_headers)


# 6. The server killed while it assembles an upload that is still arriving --------------------------------
STREAMED = {"STREAMING_MIN_SIZE": "1"}  # every upload is assembled while it arrives


def streamed_bytes(storage: Path) -> int:
    return sum(p.stat().st_size for p in storage.rglob(".*.part"))


async def test_a_streamed_tus_upload_resumes_with_identical_bytes_after_a_kill(site: Site, serve) -> None:
    """Killed with a prefix of the upload in the blob's temporary file: the chunks are all still in the
    database, so the next server streams (or assembles) it again from them."""
    user = site.user
    tus_headers = {**user.headers, **TUS}
    data = os.urandom(3 * MiB)
    first = serve(**STREAMED)
    async with http(first) as client:
        path = await tus_create(client, user, len(data))
    file_id = upload_id(path)
    request = await raw_patch(first, user, path, 0, len(data))
    await request.send(data[: 2 * MiB])

    async def streaming() -> bool:
        return streamed_bytes(site.storage) >= MiB

    await until(streaming, timeout=20)
    first.kill()
    await request.close()

    second = serve(**STREAMED)
    async with http(second) as client:
        r = await client.head(path, headers=tus_headers)
        assert r.status == 200, await r.text()
        offset = int(r.headers["Upload-Offset"])
        assert MiB <= offset <= 2 * MiB
        await resume_tus_and_compare(site, client, user, path, file_id, data, offset, tus_headers)

    async def chunks_dropped() -> bool:  # right after COMPLETED, in a statement of their own
        return (await site.fetchrow("SELECT count(*) FROM file_chunks WHERE file_id = $1", file_id))[0] == 0

    await until(chunks_dropped, timeout=20)


async def test_a_streamed_upload_killed_after_its_last_byte_completes_on_the_next_server(site: Site, serve) -> None:
    """Killed once the last chunk is in, while the worker that streamed the upload finishes it: the
    file is PROCESSING under a dead worker's lease, which the next server reaps and assembles anew."""
    user = site.user
    data = os.urandom(4 * MiB)
    first = serve(**STREAMED)
    async with http(first) as client:
        upload = await create(client, user, data, "streamed.bin", sha256=sha256(data))
        await put_chunks(
            client, user, upload, data, list(range(upload["total_chunks"] - 1)), parallel=1, checksum=False
        )

        async def streaming() -> bool:
            return streamed_bytes(site.storage) >= MiB

        await until(streaming, timeout=20)
        await put_chunks(client, user, upload, data, [upload["total_chunks"] - 1], checksum=False)
        r = await client.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)
        assert r.status == 202, await r.text()
    first.kill()

    second = serve(**STREAMED)
    async with http(second) as client:
        body = await wait_for_status(client, user, upload["id"], timeout=30)
        assert body["status"] == "COMPLETED", body["error"]
        assert sha256(await download(client, user, upload["id"])) == sha256(data)

    async def chunks_dropped() -> bool:  # right after COMPLETED, in a statement of their own
        return (await site.fetchrow("SELECT count(*) FROM file_chunks WHERE file_id = $1", upload["id"]))[0] == 0

    await until(chunks_dropped, timeout=20)
