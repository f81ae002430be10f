"""Assembly while the upload arrives: the worker appends the contiguous prefix of an upload's chunks to
its blob's temporary file as they are committed, and once the last byte is in only the tail is left.
Chunks stay in the database until the file is COMPLETED, so a prefix is only ever a head start."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service import streaming
from service.keys import worker_key
from tests.support import insert_file
from tests.tus_support import create as tus_create
from tests.tus_support import patch, until, upload_id
from tests.uploading import UPLOAD_ENV, create, put_chunks, sha256, wait_for_status

CHUNK = 64 * 1024
SETTINGS_ENV = {**UPLOAD_ENV, "STREAMING_MIN_SIZE": "1"}  # every upload is streamed


def partial_size(storage_dir: Path) -> int:
    """Bytes in the temporary files being assembled (.<blob>.<worker>.part)."""
    return sum(p.stat().st_size for p in storage_dir.rglob(".*.part"))


async def held(conn, file_id: str) -> bool:
    return await conn.fetchval("SELECT worker_id IS NOT NULL FROM files WHERE id = $1", file_id)


async def download(client, user, file_id: str) -> bytes:
    r = await client.get(f"/api/files/{file_id}/content", headers=user.headers)
    assert r.status == 200, await r.text()
    return await r.read()


async def test_tus_upload_is_assembled_while_it_arrives(served, user, conn, storage_dir) -> None:
    data = os.urandom(10 * CHUNK + 1234)
    path = await tus_create(served, user, len(data))
    file_id = upload_id(path)
    half = 6 * CHUNK
    assert (await patch(served, user, path, 0, data[:half])).status == 204
    # The worker holds the upload and has appended the committed chunks before the rest was even sent.
    await until(lambda: _size_is(storage_dir, half), timeout=20)
    assert await held(conn, file_id)
    assert await conn.fetchval("SELECT status FROM files WHERE id = $1", file_id) == "UPLOADING"

    assert (await patch(served, user, path, half, data[half:])).status == 204
    body = await wait_for_status(served, user, file_id, timeout=30)
    assert body["status"] == "COMPLETED", body["error"]
    assert body["metadata"]["sha256"] == sha256(data)
    assert await download(served, user, file_id) == data
    # The chunks go right after COMPLETED, in a statement of their own.
    await until(lambda: _no_chunks(conn, file_id), timeout=20)
    assert partial_size(storage_dir) == 0
    row = await conn.fetchrow("SELECT worker_id, attempts FROM files WHERE id = $1", file_id)
    assert row["worker_id"] is None and row["attempts"] == 1


async def test_native_chunks_are_streamed_as_far_as_they_are_contiguous(
    served,
    user,
    conn,
    storage_dir,
) -> None:
    data = os.urandom(8 * CHUNK + 99)
    upload = await create(served, user, data, sha256=sha256(data))
    await put_chunks(served, user, upload, data, indexes=[0, 1, 2, 5, 6], checksum=False)
    await until(lambda: _size_is(storage_dir, 3 * CHUNK), timeout=20)  # 0..2; 5 and 6 wait for 3 and 4
    await put_chunks(served, user, upload, data, indexes=[3, 4], checksum=False)
    await until(lambda: _size_is(storage_dir, 7 * CHUNK), timeout=20)
    await put_chunks(served, user, upload, data, indexes=[7, 8], checksum=False)
    r = await served.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)
    assert r.status == 202
    body = await wait_for_status(served, user, upload["id"], timeout=30)
    assert body["status"] == "COMPLETED", body["error"]
    assert await download(served, user, upload["id"]) == data


def spy_on_rows_read(monkeypatch) -> list[int]:
    """A spy on the one routine that reads chunk rows into the blob (it still reads them): the indexes
    it read."""
    read_from_rows: list[int] = []
    reading = streaming.append_chunks

    async def spy(conn, file_id, chunks, assembly):
        read_from_rows.extend(index for index, _ in chunks)
        await reading(conn, file_id, chunks, assembly)

    monkeypatch.setattr(streaming, "append_chunks", spy)
    return read_from_rows


async def test_chunks_received_by_this_process_are_not_read_back(served, user, conn, storage_dir, monkeypatch) -> None:
    read_from_rows = spy_on_rows_read(monkeypatch)
    data = os.urandom(10 * CHUNK + 1234)
    path = await tus_create(served, user, len(data))
    file_id = upload_id(path)
    assert (await patch(served, user, path, 0, data[: 2 * CHUNK])).status == 204
    await until(lambda: _size_is(storage_dir, 2 * CHUNK), timeout=20)  # held; these two were read back
    # The rest arrives while the upload is held: each row's bytes are offered once committed, and
    # appended from memory (a row listed between its commit and its offer may still be read back).
    assert (await patch(served, user, path, 2 * CHUNK, data[2 * CHUNK :])).status == 204
    body = await wait_for_status(served, user, file_id, timeout=30)
    assert body["status"] == "COMPLETED", body["error"]
    assert body["metadata"]["sha256"] == sha256(data)
    assert await download(served, user, file_id) == data
    assert len([i for i in read_from_rows if i >= 2]) < 9, read_from_rows
    assert served.app[worker_key].streamer._offered == 0  # every offer given back


async def test_an_uploads_first_chunks_wait_for_its_stream_in_memory(served, user, storage_dir, monkeypatch) -> None:
    # Chunk 0 makes the worker look for the upload at once, and the chunks committed before it holds
    # the upload are handed to it with the hold: chunk 0, always committed before any hold, is not read
    # back either.
    read_from_rows = spy_on_rows_read(monkeypatch)
    data = os.urandom(8 * CHUNK + 99)
    upload = await create(served, user, data)
    await put_chunks(served, user, upload, data, indexes=list(range(8)), checksum=False)
    await until(lambda: _size_is(storage_dir, 8 * CHUNK), timeout=20)
    assert 0 not in read_from_rows, read_from_rows
    await put_chunks(served, user, upload, data, indexes=[8], checksum=False)
    r = await served.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)
    assert r.status == 202
    body = await wait_for_status(served, user, upload["id"], timeout=30)
    assert body["status"] == "COMPLETED", body["error"]
    assert body["metadata"]["sha256"] == sha256(data)
    assert await download(served, user, upload["id"]) == data
    assert served.app[worker_key].streamer._offered == 0


async def test_a_wrong_declared_sha256_still_fails_the_streamed_file(served, user, conn) -> None:
    data = os.urandom(4 * CHUNK)
    upload = await create(served, user, data, sha256=sha256(b"other bytes"))
    await put_chunks(served, user, upload, data, checksum=False)
    assert (await served.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)).status == 202
    body = await wait_for_status(served, user, upload["id"], timeout=30)
    assert body["status"] == "FAILED" and "sha256 mismatch" in body["error"]


async def test_an_idle_upload_is_let_go_and_completes_the_usual_way(
    served,
    user,
    conn,
    storage_dir,
    monkeypatch,
) -> None:
    monkeypatch.setattr(streaming, "ACTIVE_SECONDS", 1.0)
    data = os.urandom(5 * CHUNK)
    path = await tus_create(served, user, len(data))
    file_id = upload_id(path)
    assert (await patch(served, user, path, 0, data[: 2 * CHUNK])).status == 204
    await until(lambda: _size_is(storage_dir, 2 * CHUNK), timeout=20)
    # No chunk for ACTIVE_SECONDS: the hold and the partial file go, and the upload is not taken again
    # while it stays idle.
    await until(lambda: _released(conn, file_id, storage_dir), timeout=20)
    assert (await patch(served, user, path, 2 * CHUNK, data[2 * CHUNK :])).status == 204
    body = await wait_for_status(served, user, file_id, timeout=30)
    assert body["status"] == "COMPLETED", body["error"]
    assert await download(served, user, file_id) == data


async def test_a_deleted_upload_stops_its_stream(served, user, conn, storage_dir) -> None:
    data = os.urandom(4 * CHUNK)
    path = await tus_create(served, user, 2 * len(data))
    assert (await patch(served, user, path, 0, data)).status == 204
    await until(lambda: _size_is(storage_dir, len(data)), timeout=20)
    r = await served.delete(path, headers={**user.headers, "Tus-Resumable": "1.0.0"})
    assert r.status == 204
    await until(lambda: _no_partial(storage_dir), timeout=20)
    assert await conn.fetchval("SELECT count(*) FROM files WHERE id = $1", upload_id(path)) == 0


async def _size_is(storage_dir: Path, size: int) -> bool:
    return partial_size(storage_dir) == size


async def _no_chunks(conn, file_id: str) -> bool:
    return await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", file_id) == 0


async def _no_partial(storage_dir: Path) -> bool:
    return partial_size(storage_dir) == 0


async def _released(conn, file_id: str, storage_dir: Path) -> bool:
    return not await held(conn, file_id) and partial_size(storage_dir) == 0


async def test_a_hold_no_task_works_on_is_released(settings, user, conn) -> None:
    """A release that could not be recorded (the database was away when streaming stopped) must not keep
    the file from everyone while this worker lives: the sweep lets go of holds no task works on."""
    from service.db import create_pool
    from service.worker import Worker

    pool = await create_pool(settings)
    worker = Worker(settings, pool)
    try:
        await worker._register()
        now = datetime.now(UTC)
        file_id = (
            await insert_file(
                conn, user.id, status="PROCESSING", worker_id=worker.id, claimed_at=now - timedelta(minutes=2)
            )
        )["id"]
        fresh = (await insert_file(conn, user.id, status="UPLOADING", worker_id=worker.id, claimed_at=now))["id"]
        await worker.streamer._sweep()
        assert await conn.fetchval("SELECT worker_id FROM files WHERE id = $1", file_id) is None
        # Claimed just now: its claimer may not have registered it yet.
        assert await conn.fetchval("SELECT worker_id FROM files WHERE id = $1", fresh) == worker.id
    finally:
        await worker.close()
        await pool.close()
