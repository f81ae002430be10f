"""Environment faults are never content faults (issue 11): a full, read-only or missing STORAGE_DIR leaves the
file PROCESSING with all its chunks, backing off (one WARNING per step, chunkd_processing_blocked) without using
up its attempts, and it completes by itself with the right bytes once the fault is gone. Bytes that are wrong
still fail. A killed attempt's temporary file goes as soon as the file is taken again. A PostgreSQL whose disk
is full answers chunk writes 507 with nothing half-written, and the retries land once space returns.

The disks are real: a tmpfs of a few MiB mounted for the test (root; CI runs the suite as root), remounted
larger or read-write to end the fault. Without root a directory without write permission stands in for the
full and the read-only disk (reason `permission`); only the full PostgreSQL needs root."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from service import db, storage
from service.app import create_app
from service.config import Settings
from service.store.files import mark_ready
from service.worker import MAX_ATTEMPTS, Worker
from tests.rufh_support import append as rufh_append
from tests.rufh_support import create as rufh_create
from tests.rufh_support import path_of as rufh_path_of
from tests.support import insert_chunk, insert_file, make_settings, scrape, scratch_dir
from tests.tus_support import STREAM, TUS, stored_bytes, upload_id, upload_path
from tests.tus_support import create as tus_create
from tests.tus_support import file_row as tus_file_row
from tests.tus_support import patch as tus_patch
from tests.uploading import create, put_chunks, sha256, stored, wait_for_status

MiB = 1024 * 1024
ROOT = os.geteuid() == 0
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
    """A STORAGE_DIR of its own: as root a 30 MiB tmpfs, too small for the test's upload until make_room(),
    remountable read-only; otherwise a directory whose write permission the test takes away."""

    def __init__(self) -> None:
        self.parent = scratch_dir("chunkd-test-disk-")
        self.path = self.parent / "storage"
        self.path.mkdir()
        if ROOT:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(self.path)], check=True)
            self.full_reason, self.read_only_reason = "no_space", "read_only"
        else:
            self.path.chmod(0o555)  # "full" from the start, as the tmpfs is for a 64 MiB file
            self.full_reason = self.read_only_reason = "permission"

    def make_room(self) -> None:
        if ROOT:
            self._remount("size=200m")
        else:
            self.path.chmod(0o755)

    def make_read_only(self) -> None:
        if ROOT:
            self._remount("ro")
        else:
            self.path.chmod(0o555)

    def make_writable(self) -> None:
        if ROOT:
            self._remount("rw")
        else:
            self.path.chmod(0o755)

    def _remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)

    def files(self) -> list[Path]:
        return [p for p in self.path.rglob("*") if p.is_file()]

    def close(self) -> None:
        if ROOT:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
        else:
            self.path.chmod(0o755)
        shutil.rmtree(self.parent, ignore_errors=True)


@pytest.fixture
def disk() -> Iterator[Disk]:
    made = Disk()
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
        assert (row["status"], row["blocked_reason"], row["error"]) == ("PROCESSING", disk.full_reason, None)
        assert row["attempts"] == first["attempts"] <= 1  # the steps use up no attempts
        assert row["chunks"] == 64  # every chunk kept
        assert (await scrape(served))[("chunkd_processing_blocked", (("reason", disk.full_reason),))] == 1
        assert not disk.files()  # no partial blob left behind between steps
        await asyncio.sleep(0.2)  # the line of the step just recorded
        steps = blocked_steps(caplog, file_id)
        assert steps[: row["blocked_retries"]] == list(range(1, row["blocked_retries"] + 1)), steps  # one per step

        disk.make_room()
        body = await wait_for_status(served, user, file_id, timeout=60)
    assert body["status"] == "COMPLETED", body["error"]
    r = await served.get(body["url"], headers=user.headers)
    assert hashlib.sha256(await r.read()).hexdigest() == sha256(data)
    assert (await scrape(served))[("chunkd_processing_blocked", (("reason", disk.full_reason),))] == 0
    row = await file_row(conn, file_id)
    assert (row["blocked_reason"], row["blocked_retries"], row["chunks"]) == (None, 0, 0)


async def test_a_read_only_storage_dir_holds_files_and_wrong_bytes_still_fail(
    database_url, disk, user, conn, caplog
) -> None:
    """Read-only: both files wait, past MAX_ATTEMPTS claims; read-write again, the right one completes and the
    one whose bytes contradict its declared SHA-256 fails (the disk was never the reason)."""
    settings = make_settings(database_url, disk.path, **SETTINGS_ENV)
    good = await ready_file(conn, user.id, b"kept safe")
    bad = await ready_file(conn, user.id, b"not what was declared", sha=sha256(b"something else"))
    disk.make_room()  # room enough: only read-only
    disk.make_read_only()
    pool = await db.create_pool(settings, max_size=4)
    try:
        worker = Worker(settings, pool)
        for _ in range(MAX_ATTEMPTS + 2):
            assert await worker.run_once() == 2
            for row in (good, bad):
                state = await file_row(conn, row["id"])
                assert (state["status"], state["attempts"], state["blocked_reason"]) == (
                    "PROCESSING",
                    0,
                    disk.read_only_reason,
                )
                assert state["chunks"] == 1
            await conn.execute("UPDATE files SET run_after = now()")  # skip the wait
        assert (await file_row(conn, good["id"]))["blocked_retries"] == MAX_ATTEMPTS + 2

        disk.make_writable()
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


async def tus_append(client, user, path: str, offset: int, body: bytes):
    """A tus PATCH of a body of several MiB (from a file-like object: aiohttp warns about large bytes)."""
    headers = {**user.headers, **TUS, **STREAM, "Upload-Offset": str(offset)}
    return await client.patch(path, data=io.BytesIO(body), headers=headers)


# PostgreSQL that cannot write ------------------------------------------------------------------------
class Tablespace:
    """file_chunks of this test's own database moved to a tablespace on a 3 MiB tmpfs of its own (root: a tmpfs
    is the way to fill a disk on purpose; the cluster's WAL and every other table stay where they were)."""

    def __init__(self) -> None:
        self.parent = scratch_dir("chunkd-test-tablespace-")
        self.path = self.parent / "space"
        self.path.mkdir()
        postgres = pwd.getpwnam("postgres")  # the owner of the test cluster (initdb refuses root)
        options = f"size=3m,uid={postgres.pw_uid},gid={postgres.pw_gid},mode=0700"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.path)], check=True)
        self.name = f"small_{uuid.uuid4().hex[:12]}"

    def make_room(self) -> None:
        subprocess.run(["mount", "-o", "remount,size=64m", str(self.path)], check=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)
        shutil.rmtree(self.parent, ignore_errors=True)


async def move_chunks(conn: asyncpg.Connection, tablespace: str) -> None:
    """file_chunks and each of its slots (partitions, sql/0217): the parent's tablespace is only where new
    partitions would go."""
    slots = await conn.fetch(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'file_chunks'::regclass"
    )
    for table in ["file_chunks", *(r[0] for r in slots)]:
        await conn.execute(f"ALTER TABLE {table} SET TABLESPACE {tablespace}")


@pytest.fixture
async def full_database(database_url: str) -> AsyncIterator[Tablespace]:
    """file_chunks on a 3 MiB tmpfs tablespace: skipped without root, unless CHUNKD_REQUIRE_ROOT=1 (set
    by .ci/run, which runs as root) says it must run, as the Ceph and browser tests do."""
    if not ROOT:
        reason = "filling PostgreSQL's disk needs root to mount a tmpfs"
        if os.environ.get("CHUNKD_REQUIRE_ROOT") == "1":
            pytest.fail(f"CHUNKD_REQUIRE_ROOT=1 but {reason}")
        pytest.skip(reason)
    space = Tablespace()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE TABLESPACE {space.name} LOCATION '{space.path}'")
        await move_chunks(conn, space.name)
        yield space
        space.make_room()  # whatever the test did, the table can move back
        await conn.execute("SET lock_timeout = '10s'")
        await move_chunks(conn, "pg_default")
        await conn.execute(f"DROP TABLESPACE {space.name}")
    finally:
        await conn.close()
        space.close()


async def test_a_database_that_cannot_write_answers_507_and_keeps_nothing_half_written(
    served, user, conn, full_database
) -> None:
    """A tus PATCH stores what fits, one committed piece at a time, and answers 507 with the exact offset kept;
    a native chunk, a tus creation-with-upload and the draft's creation with content are refused whole (507,
    no row). Once space returns, the
    clients' retries land and the files complete with the right bytes."""
    data = os.urandom(8 * MiB)
    path = await tus_create(served, user, len(data))
    r = await tus_append(served, user, path, 0, data)
    assert r.status == 507, await r.text()
    problem = await r.json()
    assert r.content_type == "application/problem+json" and problem["code"] == "INSUFFICIENT_STORAGE"
    assert r.headers["Tus-Resumable"] == "1.0.0" and r.headers["Retry-After"]
    offset = (await tus_file_row(conn, upload_id(path)))["bytes_received"]
    assert offset < len(data) and offset % MiB == 0  # whole pieces only: each is its own transaction
    assert await stored_bytes(conn, upload_id(path)) == data[:offset]  # exactly what the offset says

    chunk = os.urandom(MiB)
    native = await create(served, user, chunk, "n.bin", chunk_size=MiB, sha256=sha256(chunk))
    r = await served.put(f"/api/uploads/{native['id']}/chunks/0", data=chunk, headers=user.headers)
    assert r.status == 507 and (await r.json())["code"] == "INSUFFICIENT_STORAGE"
    assert await stored(conn, native["id"]) == []
    assert await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", native["id"]) == 0

    r = await served.post(
        "/api/tus/",
        data=chunk,
        headers={**user.headers, **TUS, **STREAM, "Upload-Length": str(len(chunk))},
    )
    assert r.status == 507 and (await r.json())["code"] == "INSUFFICIENT_STORAGE"
    with_upload = upload_path(r.headers["Location"])  # the upload exists: the client may resume it
    assert (await tus_file_row(conn, upload_id(with_upload)))["bytes_received"] == 0

    draft = await rufh_create(served, user, chunk, complete=True)  # the IETF draft's creation with content
    assert draft.status == 507 and draft.json()["code"] == "INSUFFICIENT_STORAGE", draft.body
    draft_path = rufh_path_of(draft.headers["location"])  # with its 104 before: the client may resume it
    assert draft.interim and draft.interim[0].status == 104
    assert (await tus_file_row(conn, upload_id(draft_path)))["bytes_received"] == 0

    full_database.make_room()  # space returns: the same requests land
    r = await served.put(f"/api/uploads/{native['id']}/chunks/0", data=chunk, headers=user.headers)
    assert r.status == 201, await r.text()
    r = await served.post(f"/api/uploads/{native['id']}/complete", headers=user.headers)
    assert r.status == 202, await r.text()
    r = await tus_append(served, user, path, offset, data[offset:])
    assert r.status == 204, await r.text()
    r = await tus_patch(served, user, with_upload, 0, chunk)
    assert r.status == 204, await r.text()
    r_draft = await rufh_append(served, user, draft_path, 0, chunk, complete=True)
    assert r_draft.status == 200, r_draft.body
    finished = ((native["id"], chunk), (upload_id(path), data), (upload_id(with_upload), chunk))
    for file_id, expected in (*finished, (upload_id(draft_path), chunk)):
        body = await wait_for_status(served, user, file_id, timeout=60)
        assert body["status"] == "COMPLETED", body["error"]
        r = await served.get(body["url"], headers=user.headers)
        assert hashlib.sha256(await r.read()).hexdigest() == sha256(expected)
