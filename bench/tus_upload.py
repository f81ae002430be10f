"""One big tus upload against a real `chunkd serve`: PATCH throughput, the server's peak memory while
the body streams in (it must not grow with the file), and the time until the worker has COMPLETED it.

    .venv/bin/python -m bench.tus_upload --size-mib 1024 [--chunk 8MiB] [--checksum]

Starts its own throwaway PostgreSQL (like the test suite) and server; prints one line of results."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import time
import uuid

import aiohttp
import asyncpg

from bench.timing import bench_database, rss_kib, stop
from service.auth import hash_password
from tests.support import JWT_SECRET, ChunkdProcess, make_settings, session_token

MiB = 1024 * 1024
PIECE = 4 * MiB


def peak_rss_mib(pid: int) -> float:
    return rss_kib(pid)["VmHWM"] / 1024


async def run(size: int, chunk: str, checksum: bool) -> None:
    server = worker = None
    async with bench_database(fsync="off", synchronous_commit="off") as (url, storage):
        try:
            conn = await asyncpg.connect(url)
            user_id = await conn.fetchval(
                "INSERT INTO users (email, password) VALUES ($1, $2) RETURNING id",
                f"{uuid.uuid4().hex}@bench",
                hash_password("x"),
            )
            token = await session_token(conn, make_settings(url, storage), user_id)
            env = {
                "DATABASE_URL": url,
                "STORAGE_DIR": str(storage),
                "JWT_SECRET": JWT_SECRET,
                "DEFAULT_CHUNK_SIZE": chunk,
                "LOG_LEVEL": "WARNING",
            }
            # The worker in a process of its own: the server's memory is then the upload path's alone.
            server = ChunkdProcess(env, "serve", "--no-worker").start()
            worker = ChunkdProcess(env, "worker").start(wait_path=None)
            await asyncio.sleep(1)
            idle_rss = peak_rss_mib(server.proc.pid)  # type: ignore[union-attr]

            piece = os.urandom(PIECE)
            digest = hashlib.sha1()
            for _ in range(size // PIECE):
                digest.update(piece)

            async def body():
                for _ in range(size // PIECE):
                    yield piece

            headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
                r = await http.post(f"{server.url}/api/tus/", headers={**headers, "Upload-Length": str(size)})
                location = r.headers["Location"]
                extra = {"Upload-Checksum": "sha1 " + base64.b64encode(digest.digest()).decode()} if checksum else {}
                started = time.perf_counter()
                r = await http.patch(
                    location,
                    data=body(),
                    headers={
                        **headers,
                        **extra,
                        "Upload-Offset": "0",
                        "Content-Type": "application/offset+octet-stream",
                        "Content-Length": str(size),
                    },
                )
                patch_seconds = time.perf_counter() - started
                assert r.status == 204, await r.text()
                patch_rss = peak_rss_mib(server.proc.pid)  # type: ignore[union-attr]
                file_id = location.rsplit("/", 1)[-1]
                while True:
                    r = await http.get(
                        f"{server.url}/api/files/{file_id}",
                        params={"wait": "5"},
                        headers={"Authorization": headers["Authorization"]},
                    )
                    status = (await r.json())["status"]
                    if status in ("COMPLETED", "FAILED"):
                        break
                total_seconds = time.perf_counter() - started
            # The worker drops the chunks right after COMPLETED, in a transaction of its own.
            completed = time.perf_counter()
            while (
                rows := await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", file_id)
            ) and time.perf_counter() - completed < 60:
                await asyncio.sleep(0.1)
            dropped = time.perf_counter() - completed
            await conn.close()
            print(
                f"tus PATCH {size // MiB} MiB, DEFAULT_CHUNK_SIZE={chunk}, checksum={'sha1' if checksum else 'none'}: "
                f"{patch_seconds:.1f} s ({size / MiB / patch_seconds:.0f} MiB/s); server peak RSS "
                f"{idle_rss:.0f} MiB idle -> {patch_rss:.0f} MiB after the PATCH; "
                f"{status} {total_seconds:.1f} s after the PATCH began; chunk rows left: {rows} "
                f"({dropped:.1f} s after COMPLETED)"
            )
        finally:
            stop(server)
            stop(worker)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=512)
    p.add_argument("--chunk", default="8MiB")
    p.add_argument("--checksum", action="store_true", help="send Upload-Checksum (sha1): one transaction")
    args = p.parse_args()
    asyncio.run(run(args.size_mib * MiB, args.chunk, args.checksum))


if __name__ == "__main__":
    main()
