"""chunkd backup -> chunkd restore into an empty database and storage: same rows, byte-identical blobs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from service import backup, migrate, storage
from tests.support import (
    JWT_SECRET,
    ROOT,
    insert_chunk,
    insert_file,
    insert_post,
    insert_user,
    make_settings,
    scratch_dir,
)

TABLES = ["users", "user_preferences", "posts", "files", "file_chunks", "schema_migrations"]


def run_chunkd(database_url: str, storage_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "STORAGE_DIR": str(storage_dir), "JWT_SECRET": JWT_SECRET}
    return subprocess.run(
        [sys.executable, "-m", "service", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def other_storage() -> Iterator[Path]:
    path = scratch_dir("chunkd-test-restore-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def fill(conn: asyncpg.Connection, storage_dir: Path, user_id: str) -> set[str]:
    """Rows in every table and the blobs they point to; returns the blobs' relative paths."""
    await conn.execute("INSERT INTO user_preferences (user_id, theme) VALUES ($1, 'dark')", user_id)
    post_id = await insert_post(conn, user_id, "t", content="c", published=False)
    blobs = set()
    for i, status in enumerate(["COMPLETED", "COMPLETED", "UPLOADING", "FAILED"]):
        file = await insert_file(
            conn,
            user_id,
            status=status,
            name=f"photo {i}.png",
            mimetype="image/png",
            size=70000,
            post_id=post_id,
            chunk_size=65536,
            metadata={"sha256": "x"},
        )
        name = file["filename"]
        if status == "UPLOADING":
            await insert_chunk(conn, file["id"], 0, os.urandom(65536))
            continue
        for relative in (storage.blob_key(name), storage.thumbnail_key(name, "image/webp")):
            (storage_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (storage_dir / relative).write_bytes(os.urandom(70000 + i))
            blobs.add(relative)
    return blobs


async def dump_tables(url: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(url)
    try:
        return {t: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in TABLES}
    finally:
        await conn.close()


async def test_backup_then_restore_into_an_empty_database(
    database_url: str, empty_database_url: str, conn, storage_dir: Path, other_storage: Path, user, tmp_path: Path
) -> None:
    blobs = await fill(conn, storage_dir, user.id)
    orphan = storage_dir / storage.blob_key(uuid.uuid4().hex)  # no row points to it
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"not referenced")
    (storage_dir / "files" / ".assembling.tmp").write_bytes(b"in flight")

    made = run_chunkd(database_url, storage_dir, "backup", "--dir", str(tmp_path / "backups"))
    assert made.returncode == 0, made.stderr
    archive = Path(made.stdout.strip())
    assert archive.parent == tmp_path / "backups" and archive.name.startswith("chunkd-backup-")
    assert "dumping database:" in made.stderr and "writing archive: 100%" in made.stderr
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert names == {"manifest.json", "database.dump"} | {f"storage/{b}" for b in blobs}

    target = await asyncpg.connect(empty_database_url)
    await target.execute("CREATE EXTENSION pg_stat_statements")  # an extension's views are not "data"
    await target.close()
    restored = run_chunkd(empty_database_url, other_storage, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"restored {archive}: database and 6 blobs")
    assert "restoring database: 100%" in restored.stderr and "restoring blobs: 100%" in restored.stderr

    assert await dump_tables(empty_database_url) == await dump_tables(database_url)
    expected = sha256_tree(storage_dir)
    del expected[str(orphan.relative_to(storage_dir))], expected["files/.assembling.tmp"]
    assert sha256_tree(other_storage) == expected
    check = await asyncpg.connect(empty_database_url)
    try:
        assert (await migrate.status(check)).pending == []
    finally:
        await check.close()


async def test_restore_refuses_a_non_empty_target_unless_forced(
    database_url: str, conn, storage_dir: Path, other_storage: Path, user, tmp_path: Path
) -> None:
    blobs = await fill(conn, storage_dir, user.id)
    archive = Path(run_chunkd(database_url, storage_dir, "backup", "--dir", str(tmp_path)).stdout.strip())
    before = await dump_tables(database_url)
    await conn.execute("DELETE FROM posts")
    await insert_user(conn, email="later@example.com")
    await conn.execute("CREATE EXTENSION pg_stat_statements")  # the embedded database has it: --force keeps it

    refused = run_chunkd(database_url, other_storage, "restore", str(archive))
    assert refused.returncode == 2 and "the database is not empty" in refused.stderr and "--force" in refused.stderr
    assert await conn.fetchval("SELECT count(*) FROM users WHERE email = 'later@example.com'") == 1

    (other_storage / "files").mkdir()
    (other_storage / "files" / "something").write_bytes(b"x")
    refused = run_chunkd(database_url, other_storage, "restore", str(archive), "--force")
    assert refused.returncode == 0, refused.stderr  # --force covers both targets
    assert await dump_tables(database_url) == before
    assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'") == 1
    assert set(sha256_tree(other_storage)) == blobs


def test_restore_refuses_non_empty_storage(empty_database_url: str, storage_dir: Path, tmp_path: Path) -> None:
    (storage_dir / "thumbs").mkdir()
    (storage_dir / "thumbs" / "x.webp").write_bytes(b"x")
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("manifest.json", "database.dump"):
            (tmp_path / name).write_text('{"format": "chunkd-backup/1"}')
            tar.add(tmp_path / name, arcname=name)
    refused = run_chunkd(empty_database_url, storage_dir, "restore", str(archive))
    assert refused.returncode == 2 and "already holds blobs (thumbs)" in refused.stderr


def test_restore_refuses_what_is_not_a_backup(empty_database_url: str, storage_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "other.tar"
    with tarfile.open(archive, "w") as tar:
        (tmp_path / "x").write_text("x")
        tar.add(tmp_path / "x", arcname="x")
    refused = run_chunkd(empty_database_url, storage_dir, "restore", str(archive))
    assert refused.returncode == 2 and "is not a chunkd backup archive" in refused.stderr


def test_backup_keeps_seven_days_of_archives(database_url: str, storage_dir: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    old = tmp_path / f"chunkd-backup-{(now - timedelta(days=8)).strftime('%Y%m%dT%H%M%SZ')}.tar"
    recent = tmp_path / f"chunkd-backup-{(now - timedelta(days=6)).strftime('%Y%m%dT%H%M%SZ')}.tar"
    unrelated = tmp_path / "chunkd-backup-notes.txt"
    for path in (old, recent, unrelated):
        path.write_bytes(b"x")
    made = run_chunkd(database_url, storage_dir, "backup", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    assert not old.exists() and recent.exists() and unrelated.exists() and Path(made.stdout.strip()).exists()
    assert f"removed expired backup {old}" in made.stderr


async def test_backup_is_one_snapshot(
    database_url: str, empty_database_url: str, conn, storage_dir: Path, other_storage: Path, user, tmp_path: Path
) -> None:
    """A file created while pg_dump runs is in neither the dump nor the archive's blobs."""
    before = await fill(conn, storage_dir, user.id)
    blocker = await asyncpg.connect(database_url)
    await blocker.execute("BEGIN; LOCK TABLE user_preferences IN ACCESS EXCLUSIVE MODE")  # pg_dump waits here
    task = asyncio.create_task(backup.backup(make_settings(database_url, storage_dir), tmp_path))
    try:
        for _ in range(200):
            if await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE relation = 'user_preferences'::regclass AND NOT granted"
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("pg_dump never waited for the lock")
        # Committed after the snapshot, before pg_dump reads files: a new COMPLETED file and its blob.
        late = (
            storage_dir
            / (
                await insert_file(
                    conn,
                    user.id,
                    name="late.bin",
                    mimetype="application/octet-stream",
                    type="OTHER",
                    size=4,
                    chunk_size=4,
                )
            )["path"]
        )
        late.parent.mkdir(parents=True, exist_ok=True)
        late.write_bytes(b"late")
    finally:
        await blocker.execute("ROLLBACK")
        await blocker.close()
    archive, _ = await task
    with tarfile.open(archive) as tar:
        assert {n.removeprefix("storage/") for n in tar.getnames() if n.startswith("storage/")} == before
    restored = run_chunkd(empty_database_url, other_storage, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    target = await asyncpg.connect(empty_database_url)
    try:
        assert await target.fetchval("SELECT count(*) FROM files") == 4  # not late.bin
        assert await conn.fetchval("SELECT count(*) FROM files") == 5
    finally:
        await target.close()
