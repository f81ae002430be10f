"""Latency of a small authenticated request against `chunkd serve`, next to its database floor.

    .venv/bin/python -m bench.request_latency [REQUESTS]

GET /api/uploads/{id} (the resume call: token check, the caller's row, the upload's row, its chunk
list) sent REQUESTS times (default 3000) one after another over a kept-alive connection, against the
reference measured in the same run: the same three statements sent by asyncpg straight to the
database, one after another on one connection. Starts its own durable PostgreSQL and server; the
first tenth of each series is warm-up and not counted."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg

from bench.timing import bench_database, stop
from service.store.sessions import GET_SESSION_USER
from service.store.uploads import GET_UPLOAD, RECEIVED_CHUNKS
from tests.support import JWT_SECRET, ChunkdProcess, make_settings, session_token


async def timed(requests: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times[requests // 10 :]


def summary(times: list[float]) -> str:
    p90 = sorted(times)[int(len(times) * 0.9)]
    return f"median {statistics.median(times):.3f} ms, p90 {p90:.3f} ms"


async def run(requests: int) -> None:
    server = None
    async with bench_database() as (url, storage):
        try:
            conn = await asyncpg.connect(url)
            user_id = await conn.fetchval(
                "INSERT INTO users (email, password) VALUES ($1, 'x') RETURNING id", f"{uuid.uuid4().hex}@bench"
            )
            token = await session_token(conn, make_settings(url, storage), user_id)
            session_id = await conn.fetchval("SELECT id FROM sessions WHERE user_id = $1", user_id)
            server = ChunkdProcess(
                {"DATABASE_URL": url, "STORAGE_DIR": str(storage), "JWT_SECRET": JWT_SECRET, "LOG_LEVEL": "WARNING"},
                "serve",
                "--no-worker",
            ).start()
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
                async with http.post(f"{server.url}/api/uploads", json={"filename": "b.bin", "size": 10}) as r:
                    upload_id = (await r.json())["id"]

                async def over_http() -> None:
                    async with http.get(f"{server.url}/api/uploads/{upload_id}") as r:
                        assert r.status == 200, await r.text()
                        await r.read()

                async def straight_to_the_database() -> None:
                    await conn.fetchrow(GET_SESSION_USER, session_id, user_id)
                    await conn.fetchrow(GET_UPLOAD, upload_id, user_id)
                    await conn.fetch(RECEIVED_CHUNKS, upload_id)

                http_ms = await timed(requests, over_http)
                raw_ms = await timed(requests, straight_to_the_database)
            await conn.close()
        finally:
            stop(server)
    ratio = statistics.median(http_ms) / statistics.median(raw_ms)
    print(f"GET /api/uploads/{{id}} over HTTP:      {summary(http_ms)}")
    print(f"same 3 statements straight to the db: {summary(raw_ms)}")
    print(f"HTTP / database floor (medians): {ratio:.2f}")


def main() -> None:
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))


if __name__ == "__main__":
    main()
