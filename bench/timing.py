"""Helpers the benchmarks share."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from service import migrate
from service.embedded import EmbeddedPostgres
from tests.support import ChunkdProcess, scratch_dir, with_database


async def median_ms(conn: asyncpg.Connection, sql: str, *args: object, runs: int = 5) -> float:
    """The median wall time of a query over `runs` runs, in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await conn.fetch(sql, *args)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@contextlib.asynccontextmanager
async def bench_database(**server_options: str) -> AsyncIterator[tuple[str, Path]]:
    """A throwaway embedded PostgreSQL with a migrated database `bench`, and a storage directory:
    (the database's URL, the directory). Both are gone afterwards."""
    base, storage = scratch_dir("chunkd-bench-pg-"), scratch_dir("chunkd-bench-storage-")
    pg = EmbeddedPostgres(base, server_options=server_options)
    pg.start()
    try:
        admin = await asyncpg.connect(pg.url("postgres"))
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        url = with_database(pg.url("postgres"), "bench")
        conn = await asyncpg.connect(url)
        await migrate.deploy(conn)
        await conn.close()
        yield url, storage
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(storage, ignore_errors=True)


def stop(process: ChunkdProcess | None) -> None:
    """Stops a chunkd the benchmark started, and removes its log."""
    if process is not None:
        process.stop()
        process.log.close()
        os.unlink(process.log.name)


def rss_kib(pid: int) -> dict[str, int]:
    """A process's resident memory now (VmRSS) and at its peak (VmHWM), in KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}
