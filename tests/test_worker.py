"""The processing worker: assembly, sniffing, thumbnails, failures, retries, leases, crashes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from PIL import Image

from service import db, storage
from service.app import create_app
from service.config import Settings
from service.keys import on_worker_death_key
from service.store.files import mark_ready
from service.worker import MAX_ATTEMPTS, SideTaskDied, Worker
from tests.support import insert_chunk, insert_file, on_both_stores, stored_keys
from tests.uploading import UPLOAD_ENV, create, jpeg, noise_png, sha256, upload, wait_for_status

SETTINGS_ENV = UPLOAD_ENV


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(settings, max_size=6)
    yield p
    await p.close()


async def insert_ready_file(
    conn: asyncpg.Connection,
    user_id: str,
    chunks: list[bytes],
    *,
    name: str = "f.bin",
    sha: str | None = None,
    size: int | None = None,
) -> str:
    """A file as any protocol leaves it: chunks of any lengths, then mark_ready (tus does exactly this)."""
    file_id = (
        await insert_file(
            conn,
            user_id,
            status="UPLOADING",
            name=name,
            mimetype="application/octet-stream",
            type="OTHER",
            size=sum(map(len, chunks)) if size is None else size,
            chunk_size=65536,
            sha256=sha,
        )
    )["id"]
    for i, chunk in enumerate(chunks):
        if chunk is not None:
            await insert_chunk(conn, file_id, i, chunk)
    assert await mark_ready(conn, file_id)
    return file_id


async def file_row(conn: asyncpg.Connection, file_id: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT *, (SELECT count(*) FROM file_chunks WHERE file_id = files.id) AS chunks FROM files WHERE id = $1",
        file_id,
    )


@on_both_stores
async def test_image_uploaded_in_shuffled_parallel_chunks_completes(served, user, conn, settings) -> None:
    data = noise_png(1200, 1000)  # about 3.5 MiB: 55 chunks of 64 KiB
    file_id = await upload(served, user, data, "holiday photo.png", sha256=sha256(data), mimetype="image/png")
    body = await wait_for_status(served, user, file_id)
    assert body["status"] == "COMPLETED", body["error"]
    assert body["type"] == "IMAGE" and body["mimetype"] == "image/png" and body["size"] == len(data)
    meta = body["metadata"]
    assert (meta["width"], meta["height"], meta["format"], meta["sha256"]) == (1200, 1000, "PNG", sha256(data))
    assert body["url"] == f"/api/files/{file_id}/content" and body["thumbnail"] == f"/api/files/{file_id}/thumbnail"

    r = await served.get(body["url"], headers=user.headers)
    assert r.status == 200 and r.headers["Content-Type"] == "image/png"
    assert sha256(await r.read()) == sha256(data)
    r = await served.get(body["thumbnail"], headers=user.headers)
    assert r.status == 200 and r.headers["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(await r.read())) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (320, 267)

    row = await file_row(conn, file_id)
    assert row["chunks"] == 0 and row["worker_id"] is None and row["attempts"] == 1
    # the blob and its thumbnail, no unfinished write left behind
    assert await stored_keys(settings) == {
        storage.blob_key(row["filename"]),
        storage.thumbnail_key(row["filename"], "image/webp"),
    }
    assert not [p for p in settings.work_path.rglob("*") if p.is_file()]  # nor a working copy


async def test_type_comes_from_the_bytes_not_the_name(served, user) -> None:
    data = b"Dear diary.\nThis is plain text whatever the name says.\n" * 2000
    file_id = await upload(served, user, data, "cat.jpg", mimetype="image/jpeg")
    body = await wait_for_status(served, user, file_id)
    assert body["status"] == "COMPLETED", body["error"]
    assert body["mimetype"] == "text/plain" and body["type"] == "DOCUMENT"
    assert body["thumbnail"] is None and body["metadata"]["claimed_mimetype"] == "image/jpeg"
    r = await served.get(f"/api/files/{file_id}/thumbnail", headers=user.headers)
    assert r.status == 404 and (await r.json())["code"] == "THUMBNAIL_NOT_FOUND"


@on_both_stores
async def test_exif_orientation_is_honoured(served, user) -> None:
    data = jpeg(400, 200, orientation=6)  # stored landscape, displayed portrait
    file_id = await upload(served, user, data, "phone.jpg")
    body = await wait_for_status(served, user, file_id)
    assert body["status"] == "COMPLETED", body["error"]
    meta = body["metadata"]
    assert (meta["width"], meta["height"], meta["format"], meta["orientation"]) == (200, 400, "JPEG", 6)
    r = await served.get(body["thumbnail"], headers=user.headers)
    with Image.open(io.BytesIO(await r.read())) as thumb:
        assert thumb.size == (160, 320)


@on_both_stores
async def test_empty_file_completes(served, user) -> None:
    created = await create(served, user, b"", "empty.txt")
    body = await wait_for_status(served, user, created["id"])
    assert body["status"] == "COMPLETED" and body["size"] == 0
    assert body["metadata"]["sha256"] == sha256(b"")
    r = await served.get(body["url"], headers=user.headers)
    assert r.status == 200 and await r.read() == b""


@on_both_stores
async def test_declared_checksum_mismatch_fails(served, user, conn, settings) -> None:
    data = os.urandom(200_000)
    file_id = await upload(served, user, data, sha256=sha256(b"something else"))
    body = await wait_for_status(served, user, file_id)
    assert body["status"] == "FAILED" and "sha256 mismatch" in body["error"]
    assert (await file_row(conn, file_id))["chunks"] == 0
    assert await stored_keys(settings) == set()
    r = await served.get(f"/api/files/{file_id}/content", headers=user.headers)
    assert r.status == 409 and (await r.json())["code"] == "FILE_NOT_READY"


def png(width: int, height: int, pixel_data: bytes) -> bytes:
    """A PNG whose header claims width x height, whatever the data holds."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixel_data) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "content, reason",
    [
        (png(100, 100, os.urandom(5000)), "unreadable image"),  # garbage pixel data
        (png(100, 100, zlib.compress(b"\0" * 3000)), "unreadable image"),  # truncated
        (png(30_000, 30_000, zlib.compress(b"\0" * 1000)), "pixel limit"),  # a decompression bomb
        (b"\xff\xd8\xff\xe0" + os.urandom(3000), "unreadable image"),  # JPEG magic, then noise
    ],
)
async def test_corrupt_images_fail_with_a_reason(pool, settings, user, conn, content, reason) -> None:
    file_id = await insert_ready_file(conn, user.id, [content], name="x.png")
    worker = Worker(settings, pool)
    assert await worker.run_once() == 1
    await worker.close()
    row = await file_row(conn, file_id)
    assert row["status"] == "FAILED" and reason in row["error"] and row["attempts"] == 1, row["error"]


async def test_chunks_of_any_length_are_assembled_in_index_order(pool, settings, user, conn, storage_dir) -> None:
    pieces = [os.urandom(n) for n in (10, 70_000, 1, 65_536, 5_000_000, 3)]  # as tus leaves them
    file_id = await insert_ready_file(conn, user.id, pieces, sha=sha256(b"".join(pieces)))
    worker = Worker(settings, pool)
    assert await worker.run_once() == 1
    await worker.close()
    row = await file_row(conn, file_id)
    assert row["status"] == "COMPLETED", row["error"]
    assert sha256((storage_dir / row["path"]).read_bytes()) == sha256(b"".join(pieces))


async def test_gaps_and_wrong_totals_fail(pool, settings, user, conn) -> None:
    gap = await insert_ready_file(conn, user.id, [b"a" * 10, None, b"c" * 10], size=30)  # type: ignore[list-item]
    short = await insert_ready_file(conn, user.id, [b"a" * 10], size=11)
    worker = Worker(settings, pool)
    assert await worker.run_once() == 2
    await worker.close()
    assert "not contiguous" in (await file_row(conn, gap))["error"]
    assert "hold 10 bytes" in (await file_row(conn, short))["error"]


async def test_a_store_fault_is_retried_without_counting_and_never_fails(
    pool,
    settings,
    user,
    conn,
    storage_dir,
) -> None:
    file_id = await insert_ready_file(conn, user.id, [b"hello"])
    filename = (await file_row(conn, file_id))["filename"]
    blocker = storage_dir / "files" / filename[:2]
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"")  # a file where the blob's directory must go: the store cannot write
    await conn.execute("UPDATE files SET attempts = $2 - 1 WHERE id = $1", file_id, MAX_ATTEMPTS)
    worker = Worker(settings, pool)
    for _ in range(3):  # past MAX_ATTEMPTS claims: the store's fault is not the file's
        assert await worker.run_once() == 1
        row = await file_row(conn, file_id)
        assert row["status"] == "PROCESSING" and row["worker_id"] is None and row["attempts"] == MAX_ATTEMPTS - 1
        assert await conn.fetchval("SELECT run_after > now() FROM files WHERE id = $1", file_id)  # backing off
        assert await worker.run_once() == 0  # not before its time
        await conn.execute("UPDATE files SET run_after = now() WHERE id = $1", file_id)
    assert await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", file_id) == 1

    blocker.unlink()
    assert await worker.run_once() == 1
    await worker.close()
    assert (await file_row(conn, file_id))["status"] == "COMPLETED"
    assert (storage_dir / storage.blob_key(filename)).read_bytes() == b"hello"


async def test_two_workers_never_take_the_same_file(pool, settings, user, conn) -> None:
    ids = [await insert_ready_file(conn, user.id, [os.urandom(50_000)]) for _ in range(16)]
    first, second = Worker(settings, pool, concurrency=3), Worker(settings, pool, concurrency=3)
    counts = await asyncio.gather(first.run_once(), second.run_once())
    await first.close()
    await second.close()
    assert sum(counts) == 16
    rows = await conn.fetch("SELECT status, attempts FROM files WHERE id = any($1::text[])", ids)
    assert {(r["status"], r["attempts"]) for r in rows} == {("COMPLETED", 1)}


async def test_dead_workers_files_are_taken_again(pool, settings, user, conn) -> None:
    file_id = await insert_ready_file(conn, user.id, [b"orphan"])
    await conn.execute(
        "INSERT INTO workers (id, hostname, pid, last_heartbeat) VALUES ('ghost', 'h', 1, now() - interval '1 hour')"
    )
    await conn.execute("UPDATE files SET worker_id = 'ghost', attempts = 1 WHERE id = $1", file_id)
    worker = Worker(settings, pool)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 10
    while (await file_row(conn, file_id))["status"] != "COMPLETED":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (await file_row(conn, file_id))["attempts"] == 2
    assert await conn.fetchval("SELECT count(*) FROM workers WHERE id = 'ghost'") == 0
    worker.stop()
    await task
    assert await conn.fetchval("SELECT count(*) FROM workers") == 0  # a clean stop unregisters


async def test_worker_process_killed_mid_file_is_replaced(chunkd, settings, user, conn, database_url) -> None:
    data = os.urandom(300_000)
    file_id = await insert_ready_file(conn, user.id, [data[:100_000], data[100_000:]], sha=sha256(data))
    env = {**UPLOAD_ENV, "LOG_LEVEL": "DEBUG"}
    # Hold the chunks table: the first worker claims the file, then blocks reading its chunks.
    blocker = await asyncpg.connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE file_chunks IN ACCESS EXCLUSIVE MODE")
    first = chunkd("worker", wait_path=None, **env)
    deadline = time.monotonic() + 20
    while (row := await file_row_no_chunks(conn, file_id))["worker_id"] is None:
        assert time.monotonic() < deadline, first.output()
        await asyncio.sleep(0.05)
    dead_worker = row["worker_id"]
    first.kill()  # SIGKILL mid-file: no cleanup, no unregistering
    await tx.rollback()
    await blocker.close()

    second = chunkd("worker", wait_path=None, **env)
    deadline = time.monotonic() + 30
    while (row := await file_row(conn, file_id))["status"] == "PROCESSING":
        assert time.monotonic() < deadline, second.output()
        await asyncio.sleep(0.1)
    assert row["status"] == "COMPLETED" and row["attempts"] == 2, row["error"]
    assert json.loads(row["metadata"])["sha256"] == sha256(data)  # JSON text: this connection has no codec
    assert await conn.fetchval("SELECT count(*) FROM workers WHERE id = $1", dead_worker) == 0
    assert second.stop() == 0  # SIGTERM: a graceful stop
    assert await conn.fetchval("SELECT count(*) FROM workers") == 0


async def file_row_no_chunks(conn: asyncpg.Connection, file_id: str) -> asyncpg.Record:
    """Reads only `files`: file_chunks is locked while this is used."""
    return await conn.fetchrow("SELECT status, worker_id FROM files WHERE id = $1", file_id)


async def test_stop_hands_back_a_file_that_cannot_finish_in_time(settings, user, conn, database_url) -> None:
    file_id = await insert_ready_file(conn, user.id, [b"stuck"])
    blocker = await asyncpg.connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE file_chunks IN ACCESS EXCLUSIVE MODE")  # the worker blocks mid-file
    pool = await db.create_pool(settings, max_size=4)
    try:
        worker = Worker(settings, pool, concurrency=1, shutdown_timeout=0.5)
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 10
        while (await file_row_no_chunks(conn, file_id))["worker_id"] is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        started = time.monotonic()
        worker.stop()  # every slot is busy: stop must not wait for one to free up
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 3
        row = await file_row_no_chunks(conn, file_id)
        assert row["status"] == "PROCESSING" and row["worker_id"] is None  # back in the queue for others
    finally:
        await tx.rollback()
        await blocker.close()
        await pool.close()


async def test_serve_without_worker_and_a_separate_worker(chunkd, user) -> None:
    server = chunkd("serve", "--no-worker", **UPLOAD_ENV)
    async with aiohttp.ClientSession(server.url) as session:
        file_id = await upload(session, user, b"scaled out\n" * 100, "notes.txt")
        async with session.get(f"/api/files/{file_id}", params={"wait": "1"}, headers=user.headers) as r:
            assert (await r.json())["status"] == "PROCESSING"  # nobody processes it yet
        chunkd("worker", wait_path=None, **UPLOAD_ENV)
        body = await wait_for_status(session, user, file_id)
        assert body["status"] == "COMPLETED" and body["mimetype"] == "text/plain"


async def test_chunkd_serve_runs_a_worker(chunkd, user) -> None:
    server = chunkd("serve", **UPLOAD_ENV)
    data = jpeg(640, 480)
    async with aiohttp.ClientSession(server.url) as session:
        file_id = await upload(session, user, data, "photo.jpg")
        body = await wait_for_status(session, user, file_id)
        assert body["status"] == "COMPLETED" and body["metadata"]["width"] == 640
        async with session.get(body["url"], headers=user.headers) as r:
            assert sha256(await r.read()) == sha256(data)
    assert server.stop() == 0


async def test_a_worker_whose_side_task_dies_stops_loudly(pool, settings, user, conn, caplog) -> None:
    """A side task that ends by itself (a bug: each handles the faults it expects) stops the worker: one
    CRITICAL line with the traceback, the worker unregistered, SideTaskDied for its caller (`chunkd worker`
    exits non-zero with it, `chunkd serve` stops serving)."""
    worker = Worker(settings, pool)

    async def broken_heartbeat() -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("a bug in the heartbeat")

    worker._heartbeat_loop = broken_heartbeat  # type: ignore[method-assign]  # the bug under test
    with caplog.at_level(logging.INFO, logger="service.worker"), pytest.raises(SideTaskDied):
        await asyncio.wait_for(worker.run(), 20)
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "worker heartbeat" in critical[0].getMessage(), critical
    assert critical[0].exc_info is not None and "a bug in the heartbeat" in str(critical[0].exc_info[1])
    assert await conn.fetchval("SELECT count(*) FROM workers") == 0  # stopped cleanly: unregistered


async def test_serve_stops_when_its_worker_dies(aiohttp_client, settings, caplog, monkeypatch) -> None:
    """Inside the server the death reaches its hook (`chunkd serve` sets one that stops serving)."""

    async def broken_cleanup(self: Worker) -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("a bug in the cleanup loop")

    monkeypatch.setattr(Worker, "_cleanup_loop", broken_cleanup)  # the bug under test
    stopped = asyncio.Event()
    app = create_app(settings, with_worker=True)
    app[on_worker_death_key] = stopped.set
    with caplog.at_level(logging.CRITICAL, logger="service.worker"):
        await aiohttp_client(app)
        await asyncio.wait_for(stopped.wait(), 20)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL] == [
        "worker stopping: its side task 'worker cleanup' ended with RuntimeError('a bug in the cleanup loop')"
    ]
