"""Cleanup removes exactly what it should: old FAILED files, expired uploads, orphaned chunks and blobs;
--dry-run removes nothing and reports the same."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from service import cleanup, storage
from service.config import Settings
from service.store import cleanup as cleanup_store
from tests.support import JWT_SECRET, ROOT, insert_chunk, insert_file

HOUR, DAY = 3600, 86400


def put(storage_dir: Path, relative: str, age: float) -> Path:
    path = storage_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(relative.encode())
    then = time.time() - age
    os.utime(path, (then, then))
    return path


async def add_file(
    conn: asyncpg.Connection,
    storage_dir: Path,
    user_id: str,
    status: str,
    days_old: int = 0,
    expires_in: float | None = DAY,
    blob: bool = True,
) -> tuple[str, str]:
    now = datetime.now(UTC)
    expires_at = None if expires_in is None else now + timedelta(seconds=expires_in)
    file = await insert_file(
        conn,
        user_id,
        status=status,
        size=1,
        type="OTHER",
        mimetype="text/plain",
        chunk_size=1,
        created_at=now - timedelta(days=days_old),
        expires_at=expires_at,
    )
    file_id, name = file["id"], file["filename"]
    await insert_chunk(conn, file_id, 0, b"x")
    if blob:
        put(storage_dir, storage.blob_key(name), 2 * HOUR)
        put(storage_dir, storage.thumbnail_key(name, "image/webp"), 2 * HOUR)
    return file_id, name


async def build_scene(conn: asyncpg.Connection, storage_dir: Path, user_id: str) -> dict:
    old_failed = await add_file(conn, storage_dir, user_id, "FAILED", days_old=91)
    expired = await add_file(conn, storage_dir, user_id, "UPLOADING", expires_in=-60, blob=False)
    kept = [
        await add_file(conn, storage_dir, user_id, "FAILED", days_old=89),
        await add_file(conn, storage_dir, user_id, "COMPLETED", days_old=400),
        await add_file(conn, storage_dir, user_id, "UPLOADING", expires_in=60, blob=False),
        await add_file(conn, storage_dir, user_id, "PROCESSING", expires_in=None, blob=False),
    ]
    orphan, young = uuid.uuid4().hex, uuid.uuid4().hex
    removed_blobs = {
        storage.blob_key(old_failed[1]),
        storage.thumbnail_key(old_failed[1], "image/webp"),
        str(put(storage_dir, storage.blob_key(orphan), 2 * HOUR).relative_to(storage_dir)),
        str(put(storage_dir, storage.thumbnail_key(orphan, "image/jpeg"), 2 * HOUR).relative_to(storage_dir)),
        str(put(storage_dir, "files/ab/.assemble-stale", 2 * DAY).relative_to(storage_dir)),
        str(put(storage_dir, "files/cd/cd0123.tmp", 2 * DAY).relative_to(storage_dir)),
    }
    kept_blobs = {
        str(p.relative_to(storage_dir))
        for p in [
            put(storage_dir, storage.blob_key(young), 60),  # too new: an assembly may be in flight
            put(storage_dir, "files/ab/.assemble-inflight", 2 * HOUR),  # temporary, not stale yet
            put(storage_dir, "outside-the-blob-areas.txt", 10 * DAY),  # not cleanup's business
        ]
    } | {storage.blob_key(name) for _, name in kept if (storage_dir / storage.blob_key(name)).exists()}
    return {
        "removed_ids": {old_failed[0], expired[0]},
        "kept_ids": {i for i, _ in kept},
        "removed_blobs": removed_blobs,
        "kept_blobs": kept_blobs,
    }


def files_on_disk(storage_dir: Path) -> set[str]:
    return {str(p.relative_to(storage_dir)) for p in storage_dir.rglob("*") if p.is_file()}


async def test_cleanup_removes_exactly_the_garbage(conn, settings: Settings, storage_dir: Path, user) -> None:
    scene = await build_scene(conn, storage_dir, user.id)
    before = files_on_disk(storage_dir)
    assert scene["removed_blobs"] | scene["kept_blobs"] <= before

    report = await cleanup.run_cleanup(conn, settings)
    assert not report.dry_run and not report.skipped
    assert {f.id for f in report.files} == scene["removed_ids"]
    # The removed files' chunks went with them (ON DELETE CASCADE); those of the kept COMPLETED and FAILED
    # files are what a worker stopped between COMPLETED and dropping them leaves behind.
    assert report.orphan_chunks == 2
    assert set(report.blobs) == scene["removed_blobs"]
    assert files_on_disk(storage_dir) == before - scene["removed_blobs"]
    assert {r["id"] for r in await conn.fetch("SELECT id FROM files")} == scene["kept_ids"]
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM file_chunks WHERE file_id = any($1::text[])", list(scene["removed_ids"])
        )
        == 0
    )
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM file_chunks c JOIN files f ON f.id = c.file_id"
            " WHERE f.status IN ('UPLOADING', 'PROCESSING')"
        )
        == 2
    )
    assert await conn.fetchval("SELECT count(*) FROM file_chunks") == 2

    again = await cleanup.run_cleanup(conn, settings)
    assert (again.files, again.orphan_chunks, again.blobs) == ([], 0, [])


async def test_dry_run_removes_nothing_and_reports_the_same(conn, settings: Settings, storage_dir: Path, user) -> None:
    scene = await build_scene(conn, storage_dir, user.id)
    before_disk = files_on_disk(storage_dir)
    before_rows = await conn.fetch("SELECT * FROM files ORDER BY id")
    before_chunks = await conn.fetchval("SELECT count(*) FROM file_chunks")

    report = await cleanup.run_cleanup(conn, settings, dry_run=True)
    assert report.dry_run
    assert {f.id for f in report.files} == scene["removed_ids"]
    assert set(report.blobs) == scene["removed_blobs"]
    assert files_on_disk(storage_dir) == before_disk
    assert await conn.fetch("SELECT * FROM files ORDER BY id") == before_rows
    assert await conn.fetchval("SELECT count(*) FROM file_chunks") == before_chunks


async def test_chunks_whose_file_is_gone(conn, settings: Settings, user) -> None:
    """Only possible without the ON DELETE CASCADE constraint (a damaged or partial restore)."""
    await conn.execute("ALTER TABLE file_chunks DROP CONSTRAINT file_chunks_file_id_fkey")
    await conn.execute("INSERT INTO file_chunks (file_id, chunk_index, data) VALUES ('gone', 0, 'x'), ('gone', 1, 'y')")
    assert (await cleanup.run_cleanup(conn, settings, dry_run=True)).orphan_chunks == 2
    assert await conn.fetchval("SELECT count(*) FROM file_chunks") == 2
    assert (await cleanup.run_cleanup(conn, settings)).orphan_chunks == 2
    assert await conn.fetchval("SELECT count(*) FROM file_chunks") == 0


async def test_one_pass_at_a_time(conn, settings: Settings, database_url: str) -> None:
    other = await asyncpg.connect(database_url)
    try:
        assert await cleanup_store.try_lock(other)
        report = await cleanup.run_cleanup(conn, settings)
        assert report.skipped and report.lines() == ["another cleanup pass is running; nothing done"]
    finally:
        await other.close()


async def test_cleanup_command_prints_what_it_removed(conn, database_url: str, storage_dir: Path, user) -> None:
    scene = await build_scene(conn, storage_dir, user.id)
    env = {**os.environ, "DATABASE_URL": database_url, "STORAGE_DIR": str(storage_dir), "JWT_SECRET": JWT_SECRET}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", "cleanup", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    dry = run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert all(f"would remove file {i}" in dry.stdout for i in scene["removed_ids"])
    assert dry.stdout.splitlines()[-1] == "would remove: 2 files, 2 orphaned chunks, 6 blobs"
    assert (dry.stdout + dry.stderr).count("would remove: 2 files") == 1  # the summary once, not also logged
    assert await conn.fetchval("SELECT count(*) FROM files WHERE id = any($1::text[])", list(scene["removed_ids"])) == 2

    real = run()
    assert real.returncode == 0, real.stderr
    assert all(f"removed blob {b}" in real.stdout for b in scene["removed_blobs"])
    assert real.stdout.splitlines()[-1] == "removed: 2 files, 2 orphaned chunks, 6 blobs"
    assert (real.stdout + real.stderr).count("removed: 2 files") == 1
    assert await conn.fetchval("SELECT count(*) FROM files WHERE id = any($1::text[])", list(scene["removed_ids"])) == 0
