"""Times the admin statistics, the metrics gauge query, a cleanup dry run and a backup on a large table.

    .venv/bin/python -m bench.operations [FILES] [BLOBS]

Starts a throwaway embedded PostgreSQL, migrates, loads FILES files rows (default 200000) of mixed types
and statuses over 400 days, and BLOBS one-byte blobs (default 20000; half of them referenced by a row,
half orphaned, all older than cleanup's grace period). Prints the median of 5 runs per statement."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from bench.timing import bench_database, median_ms
from service import backup, cleanup, storage
from service.config import load_settings
from service.store import stats
from tests.support import scratch_dir


async def run(n: int, blobs: int) -> None:
    backups = scratch_dir("chunkd-bench-backups-")
    try:
        async with bench_database(fsync="off", synchronous_commit="off") as (url, store_dir):
            await measure(url, n, blobs, store_dir, backups)
    finally:
        shutil.rmtree(backups, ignore_errors=True)


async def measure(url: str, n: int, blobs: int, store_dir: Path, backups: Path) -> None:
    conn = await asyncpg.connect(url)
    user_id = await conn.fetchval("INSERT INTO users (email, password) VALUES ('u@example.com', 'x') RETURNING id")
    await conn.execute(
        """
        INSERT INTO files (original_name, filename, mimetype, size, type, status, path, uploaded_by_id, chunk_size,
                           created_at, expires_at)
        SELECT 'f', md5(i::text), 'x', (random() * 1e7)::bigint,
               (ARRAY['IMAGE','DOCUMENT','VIDEO','AUDIO','OTHER'])[1 + i % 5]::file_type,
               (ARRAY['UPLOADING','PROCESSING','COMPLETED','FAILED'])[1 + i % 4]::file_status,
               'files/' || substr(md5(i::text), 1, 2) || '/' || md5(i::text), $1, 1024,
               now() - make_interval(secs => random() * 86400 * 400), now() + make_interval(days => 1)
          FROM generate_series(1, $2) i""",
        user_id,
        n,
    )
    await conn.execute("ANALYZE")
    names = [
        r[0] for r in await conn.fetch("SELECT filename FROM files WHERE status = 'COMPLETED' LIMIT $1", blobs // 2)
    ]
    old = time.time() - 7200
    for name in names + [uuid.uuid4().hex for _ in range(blobs - len(names))]:
        path = store_dir / storage.blob_key(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (old, old))
    for name, sql, args in (
        ("stats/files", stats.FILE_STATISTICS, ()),
        ("stats/uploads/daily?days=30", stats.DAILY_UPLOADS, (30,)),
        ("stats/uploads/daily?days=366", stats.DAILY_UPLOADS, (366,)),
        ("metrics queue depth", stats.QUEUE_DEPTH, ()),
    ):
        print(f"{name:32} {await median_ms(conn, sql, *args):8.1f} ms")
    settings = load_settings({"DATABASE_URL": url, "STORAGE_DIR": str(store_dir)}, dotenv=None)
    started = time.perf_counter()
    report = await cleanup.run_cleanup(conn, settings, dry_run=True)
    print(
        f"{'cleanup --dry-run':32} {(time.perf_counter() - started) * 1000:8.1f} ms "
        f"({len(report.files)} files, {len(report.blobs)} blobs)"
    )
    await conn.close()
    started = time.perf_counter()
    archive, _ = await backup.backup(settings, backups)
    print(f"{'backup':32} {(time.perf_counter() - started) * 1000:8.1f} ms ({archive.stat().st_size} bytes)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    blobs = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    asyncio.run(run(n, blobs))


if __name__ == "__main__":
    main()
