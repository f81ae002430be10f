"""Helpers the benchmarks share."""
from __future__ import annotations

import statistics
import time

import asyncpg


async def median_ms(conn: asyncpg.Connection, sql: str, *args: object, runs: int = 5) -> float:
    """The median wall time of a query over `runs` runs, in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await conn.fetch(sql, *args)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
