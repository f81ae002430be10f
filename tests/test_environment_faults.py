"""Environment faults are never content faults (issue 11): a full, read-only or missing STORAGE_DIR leaves the
file PROCESSING with all its chunks, backing off (one WARNING per step, chunkd_processing_blocked) without using
up its attempts, and it completes by itself with the right bytes once the fault is gone. Bytes that are wrong
still fail. A killed attempt's temporary file goes as soon as the file is taken again.

The disks are real: a tmpfs of a few MiB mounted for the test (root; CI runs the suite as root), remounted
larger or read-write to end the fault. Without root only the faults a plain directory can show run."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from service import db, storage
from service.app import create_app
from service.config import Settings
from service.store.files import mark_ready
from service.worker import MAX_ATTEMPTS, Worker
from tests.support import insert_chunk, insert_file, make_settings, scrape, scratch_dir
from tests.uploading import create, put_chunks, sha256, wait_for_status

MiB = 1024 * 1024
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounting a small tmpfs needs root (CI runs the suite as root)")
# 1 MiB chunks (64 PUTs for 64 MiB), a short lease, and a backoff capped at 2 s so that the tests see several
# steps and the file completes soon after the fault ends.
SETTINGS_ENV = {
    "DEFAULT_CHUNK_SIZE": "1MiB",
    "MAX_CHUNK_SIZE": "1MiB",
    "WORKER_LEASE": "3s",
    "BLOCKED_BACKOFF_MIN": "1s",
    "BLOCKED_BACKOFF_MAX": "2s",
}


class Disk:
    """A STORAGE_DIR of its own: a tmpfs of `size` (root), remountable larger, read-only or read-write."""

    def __init__(self, size: str) -> None:
        self.parent = scratch_dir("chunkd-test-disk-")
        self.path = self.parent / "storage"
        self.path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)], check=True)

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)

    def files(self) -> list[Path]:
        return [p for p in self.path.rglob("*") if p.is_file()]

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)
        shutil.rmtree(self.parent, ignore_errors=True)


@pytest.fixture
def disk() -> Iterator[Disk]:
    made = Disk("30m")
    yield made
    made.close()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(settings, max_size=4)
    yield p
    await p.close()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def file_row(conn: asyncpg.Connection, file_id: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT status, attempts, blocked_reason, blocked_retries, error, worker_id,"
        " (SELECT count(*) FROM file_chunks WHERE file_id = files.id) AS chunks FROM files WHERE id = $1",
        file_id,
    )


async def ready_file(conn: asyncpg.Connection, user_id: str, data: bytes, sha: str | None = None) -> dict:
    """A complete upload of one chunk, ready for the worker."""
    row = await insert_file(
        conn, user_id, status="UPLOADING", name="f.bin", mimetype="application/octet-stream", type="OTHER",
        size=len(data), sha256=sha,
    )  # fmt: skip
    await insert_chunk(conn, row["id"], 0, data)
    assert await mark_ready(conn, row["id"])
    return row


def blocked_steps(caplog: pytest.LogCaptureFixture, file_id: str) -> list[int]:
    """The step numbers of the WARNING lines that said the file was held back, in order."""
    return [
        int(str(r.args[-1]))  # type: ignore[index]  # args is a tuple here: its last item is the step
        for r in caplog.records
        if getattr(r, "action", None) == "file_blocked" and getattr(r, "file_id", None) == file_id
        if r.levelno == logging.WARNING
    ]


@needs_root
async def test_a_full_storage_dir_holds_the_file_until_space_returns(
    aiohttp_client, database_url, disk, user, conn, caplog
) -> None:
    """A 64 MiB upload on a 30 MiB disk: PROCESSING with its 64 chunks for as long as the disk is full, then
    COMPLETED with the right bytes once it is made larger, without anyone touching the file."""
    served = await aiohttp_client(create_app(make_settings(database_url, disk.path, **SETTINGS_ENV), with_worker=True))
    data = os.urandom(64 * MiB)
    with caplog.at_level(logging.WARNING, logger="service"):
        created = await create(served, user, data, "big.bin", chunk_size=MiB, sha256=sha256(data))
        file_id = created["id"]
        await put_chunks(served, user, created, data, checksum=False)
        r = await served.post(f"/api/uploads/{file_id}/complete", headers=user.headers)
        assert r.status == 202, await r.text()

        async def blocked(steps: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return (await file_row(conn, file_id))["blocked_retries"] >= steps

            return check

        await until(await blocked(2))
        first = await file_row(conn, file_id)
        await until(await blocked(first["blocked_retries"] + 2))
        row = await file_row(conn, file_id)
        assert (row["status"], row["blocked_reason"], row["error"]) == ("PROCESSING", "no_space", None)
        assert row["attempts"] == first["attempts"] <= 1  # the steps use up no attempts
        assert row["chunks"] == 64  # every chunk kept
        assert (await scrape(served))[("chunkd_processing_blocked", (("reason", "no_space"),))] == 1
        assert not disk.files()  # no partial blob left behind between steps
        await asyncio.sleep(0.2)  # the line of the step just recorded
        steps = blocked_steps(caplog, file_id)
        assert steps[: row["blocked_retries"]] == list(range(1, row["blocked_retries"] + 1)), steps  # one per step

        disk.remount("size=200m")
        body = await wait_for_status(served, user, file_id, timeout=60)
    assert body["status"] == "COMPLETED", body["error"]
    r = await served.get(body["url"], headers=user.headers)
    assert hashlib.sha256(await r.read()).hexdigest() == sha256(data)
    assert (await scrape(served))[("chunkd_processing_blocked", (("reason", "no_space"),))] == 0
    row = await file_row(conn, file_id)
    assert (row["blocked_reason"], row["blocked_retries"], row["chunks"]) == (None, 0, 0)


@needs_root
async def test_a_read_only_storage_dir_holds_files_and_wrong_bytes_still_fail(
    database_url, disk, user, conn, caplog
) -> None:
    """Read-only: both files wait, past MAX_ATTEMPTS claims; read-write again, the right one completes and the
    one whose bytes contradict its declared SHA-256 fails (the disk was never the reason)."""
    settings = make_settings(database_url, disk.path, **SETTINGS_ENV)
    good = await ready_file(conn, user.id, b"kept safe")
    bad = await ready_file(conn, user.id, b"not what was declared", sha=sha256(b"something else"))
    disk.remount("ro")
    pool = await db.create_pool(settings, max_size=4)
    try:
        worker = Worker(settings, pool)
        for _ in range(MAX_ATTEMPTS + 2):
            assert await worker.run_once() == 2
            for row in (good, bad):
                state = await file_row(conn, row["id"])
                assert (state["status"], state["attempts"], state["blocked_reason"]) == ("PROCESSING", 0, "read_only")
                assert state["chunks"] == 1
            await conn.execute("UPDATE files SET run_after = now()")  # skip the wait
        assert (await file_row(conn, good["id"]))["blocked_retries"] == MAX_ATTEMPTS + 2

        disk.remount("rw")
        assert await worker.run_once() == 2
        await worker.close()
    finally:
        await pool.close()
    assert (await file_row(conn, good["id"]))["status"] == "COMPLETED"
    assert (disk.path / storage.blob_key(good["filename"])).read_bytes() == b"kept safe"
    failed = await file_row(conn, bad["id"])
    assert failed["status"] == "FAILED" and "sha256 mismatch" in failed["error"]
    assert (failed["blocked_reason"], failed["chunks"]) == (None, 0)


async def test_a_missing_storage_dir_is_waited_for_not_recreated(pool, settings, user, conn, storage_dir) -> None:
    """An unmounted disk looks like a missing directory: nothing is written where it should be."""
    row = await ready_file(conn, user.id, b"kept safe")
    away = storage_dir.with_name(storage_dir.name + "-unmounted")
    storage_dir.rename(away)
    worker = Worker(settings, pool)
    try:
        assert await worker.run_once() == 1
        state = await file_row(conn, row["id"])
        assert (state["status"], state["attempts"], state["blocked_reason"]) == ("PROCESSING", 0, "storage_missing")
        assert state["chunks"] == 1
        assert not storage_dir.exists()  # not recreated in the disk's place
    finally:
        away.rename(storage_dir)
    await conn.execute("UPDATE files SET run_after = now() WHERE id = $1", row["id"])
    assert await worker.run_once() == 1
    await worker.close()
    assert (await file_row(conn, row["id"]))["status"] == "COMPLETED"
    assert (storage_dir / storage.blob_key(row["filename"])).read_bytes() == b"kept safe"


async def test_a_killed_attempts_temporary_file_goes_when_the_file_is_taken_again(
    pool, settings, user, conn, storage_dir
) -> None:
    row = await ready_file(conn, user.id, b"second try")
    final = storage_dir / storage.blob_key(row["filename"])
    final.parent.mkdir(parents=True)
    stale = final.with_name(f".{final.name}.deadbeef.part")  # what a SIGKILLed worker leaves
    stale.write_bytes(b"half")
    os.utime(stale, (time.time(), time.time()))  # fresh: the start-up sweep of old leftovers would not take it
    worker = Worker(settings, pool)
    assert await worker.run_once() == 1
    await worker.close()
    assert not stale.exists() and final.read_bytes() == b"second try"
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]
