"""Upload and assembly throughput of chunkd, each against its raw PostgreSQL ceiling, in one run.

    python bench/upload.py                    # 1 GiB, 8 MiB chunks; starts PostgreSQL and `chunkd serve` itself
    python bench/upload.py --size 256MiB
    DATABASE_URL=... JWT_SECRET=... python bench/upload.py --url http://127.0.0.1:8080 --pid 1234

What it measures, on the same random file:
  upload      native protocol over HTTP, 1 and 4 chunks in flight, vs. the same chunks INSERTed straight
              into file_chunks with asyncpg (1 and 4 connections), alternating batch by batch: MB/s, ratio
  completed   time from POST .../complete to status COMPLETED (the server's worker)
  assembly    the worker's assembly code (service.assembly.append_chunks) vs. the raw ceiling: the same chunks
              SELECTed with asyncpg and written to a file, fsync included in both
  memory      the server's RSS at start and its peak (VmHWM in /proc/PID/status)
Without DATABASE_URL a throwaway PostgreSQL is started with default (durable) settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import bench_database, rss_kib  # noqa: E402
from service import storage  # noqa: E402
from service.assembly import Assembly, append_chunks  # noqa: E402
from service.config import MiB, _bytes, load_settings  # noqa: E402
from service.storage import LocalStore  # noqa: E402
from service.store.workers import list_chunk_lengths  # noqa: E402
from tests.support import session_token  # noqa: E402

# aiohttp warns about request bodies above 1 MiB sent as bytes; chunks are meant to be sent whole.
warnings.filterwarnings("ignore", category=ResourceWarning)
MB = 1_000_000


def mbps(size: int, seconds: float) -> float:
    return size / MB / seconds


# setup -----------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    else:
        async with bench_database(max_wal_size="4GB") as (url, _storage):
            yield url


@contextlib.contextmanager
def server(
    args: argparse.Namespace, database_url: str, secret: str, storage_dir: Path
) -> Iterator[tuple[str, int, Path | None]]:
    if args.url:
        yield args.url, args.pid, None
        return
    port = args.port
    log = storage_dir.parent / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": secret,
        "PORT": str(port),
        "STORAGE_DIR": str(storage_dir),
        "LOG_LEVEL": "INFO",
        "MAX_UPLOAD_SIZE": "64GiB",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield f"http://127.0.0.1:{port}", proc.pid, log
    finally:
        proc.terminate()
        proc.wait(60)


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise SystemExit("server did not become ready")


def make_random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MiB))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def read_chunk(path: Path, index: int, chunk: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(index * chunk)
        return f.read(chunk)


# measurements ----------------------------------------------------------------------------------------
async def paired_upload(
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    url: str,
    user_id: str,
    path: Path,
    size: int,
    chunk: int,
    parallel: int,
    sha256: str,
) -> dict[str, float | str]:
    """The same chunks twice, `parallel` at a time: PUT over HTTP (native protocol) and INSERTed straight
    into file_chunks with asyncpg (the ceiling). The two alternate batch by batch, so that both see the
    same disk: on a shared machine its speed drifts by 2x within a minute."""
    blob = storage.new_blob_name()
    raw_id = await pool.fetchval(
        "INSERT INTO files (original_name, filename, path, mimetype, type, size, chunk_size, uploaded_by_id)"
        " VALUES ('raw', $1, $2, 'application/octet-stream', 'OTHER', $3, $4, $5) RETURNING id",
        blob,
        storage.blob_key(blob),
        size,
        chunk,
        user_id,
    )
    async with session.post(
        f"{url}/api/uploads", json={"filename": "bench.bin", "size": size, "chunk_size": chunk, "sha256": sha256}
    ) as r:
        assert r.status == 201, await r.text()
        file_id = (await r.json())["id"]

    async def raw(i: int) -> None:
        data = read_chunk(path, i, chunk)
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO file_chunks (file_id, chunk_index, data) VALUES ($1, $2, $3)", raw_id, i, data
            )

    async def http(i: int) -> None:
        data = read_chunk(path, i, chunk)
        async with session.put(f"{url}/api/uploads/{file_id}/chunks/{i}", data=data) as r:
            assert r.status == 201, await r.text()

    seconds = {"raw": 0.0, "http": 0.0}
    indexes = list(range(-(-size // chunk)))
    for n, start in enumerate(range(0, len(indexes), parallel)):
        batch = indexes[start : start + parallel]
        for name in ("raw", "http") if n % 2 == 0 else ("http", "raw"):
            send = raw if name == "raw" else http
            started = time.perf_counter()
            await asyncio.gather(*(send(i) for i in batch))
            seconds[name] += time.perf_counter() - started
    return {"raw_id": raw_id, "file_id": file_id, **seconds}


async def wait_completed(session: aiohttp.ClientSession, url: str, file_id: str) -> float:
    """Seconds from POST complete to COMPLETED, the server's worker doing the work."""
    started = time.perf_counter()
    async with session.post(f"{url}/api/uploads/{file_id}/complete") as r:
        assert r.status == 202, await r.text()
    while True:
        async with session.get(f"{url}/api/files/{file_id}", params={"wait": "30"}) as r:
            body = await r.json()
        if body["status"] in ("COMPLETED", "FAILED"):
            break
    assert body["status"] == "COMPLETED", body["error"]
    return time.perf_counter() - started


async def raw_assembly(pool: asyncpg.Pool, file_id: str, out: Path) -> float:
    """The ceiling: whole chunks SELECTed in order and written to a file, then fsync."""
    started = time.perf_counter()
    async with pool.acquire() as conn:
        indexes = [
            r[0]
            for r in await conn.fetch(
                "SELECT chunk_index FROM file_chunks WHERE file_id = $1 ORDER BY chunk_index", file_id
            )
        ]
        with open(out, "wb") as f:
            for i in indexes:
                f.write(
                    await conn.fetchval(
                        "SELECT data FROM file_chunks WHERE file_id = $1 AND chunk_index = $2", file_id, i
                    )
                )
            f.flush()
            os.fsync(f.fileno())
    seconds = time.perf_counter() - started
    out.unlink()
    return seconds


async def product_assembly(pool: asyncpg.Pool, file_id: str, out: Path) -> float:
    """What the worker runs: service.assembly.append_chunks (slices, pipelined write + SHA-256, fsync)."""
    started = time.perf_counter()
    async with pool.acquire() as conn:
        chunks = await list_chunk_lengths(conn, file_id)
        assembly = await Assembly.begin(LocalStore(out.parent), out.name, out.parent)
        await append_chunks(conn, file_id, chunks, assembly)
        await assembly.finish()
        await assembly.commit()
    seconds = time.perf_counter() - started
    out.unlink()
    return seconds


async def settle(pool: asyncpg.Pool) -> None:
    """Dead chunks vacuumed and dirty pages written out, so that no measurement pays for the last one."""
    await pool.execute("VACUUM file_chunks")
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await pool.execute("CHECKPOINT")


def server_assembly_ms(log: Path | None, file_id: str) -> int | None:
    if log is None:
        return None
    for line in log.read_text(errors="replace").splitlines():
        if "action=file_assembled" in line and f"file_id={file_id}" in line:
            return int(re.search(r"\bms=(\d+)", line).group(1))  # type: ignore[union-attr]
    return None


async def run(args: argparse.Namespace) -> None:
    size, chunk = _bytes(1)(args.size), _bytes(1)(args.chunk)
    secret = os.environ.get("JWT_SECRET") or "bench-" + uuid.uuid4().hex * 2
    work = Path(tempfile.mkdtemp(prefix="chunkd-bench-"))
    storage_dir = work / "storage"
    storage_dir.mkdir()
    try:
        data = work / "random.bin"
        print(f"file: {size / MB:.0f} MB of random bytes, chunks of {chunk / MiB:g} MiB", flush=True)
        digest = make_random_file(data, size)
        async with database() as database_url:
            with server(args, database_url, secret, storage_dir) as (url, pid, log):
                await wait_ready(url)
                settings = load_settings({"DATABASE_URL": database_url, "JWT_SECRET": secret}, dotenv=None)
                pool = await asyncpg.create_pool(database_url, min_size=4, max_size=4)
                user_id = await pool.fetchval(
                    "INSERT INTO users (email, password) VALUES ($1, 'x') RETURNING id",
                    f"bench-{uuid.uuid4().hex[:8]}@example.com",
                )
                async with pool.acquire() as conn:
                    headers = {"Authorization": f"Bearer {await session_token(conn, settings, user_id)}"}
                base_rss = rss_kib(pid) if pid else {}
                results: dict[str, float] = {}
                async with aiohttp.ClientSession(headers=headers) as session:
                    for parallel in (1, 4):
                        await settle(pool)
                        run = await paired_upload(pool, session, url, user_id, data, size, chunk, parallel, digest)
                        results[f"raw{parallel}"], results[f"http{parallel}"] = run["raw"], run["http"]  # type: ignore[assignment]
                        if parallel == 1:
                            # The first read of fresh rows sets their hint bits and dirties every page:
                            # VACUUM does that once, so that neither side pays for it.
                            await settle(pool)
                            times: dict[str, list[float]] = {"raw": [], "product": []}
                            for name in ("raw", "product", "product", "raw"):  # best of two, each first once
                                measure = raw_assembly if name == "raw" else product_assembly
                                times[name].append(await measure(pool, str(run["raw_id"]), work / f"{name}.out"))
                            results["assembly_raw"], results["assembly"] = min(times["raw"]), min(times["product"])
                        await pool.execute("DELETE FROM files WHERE id = $1", run["raw_id"])
                        await settle(pool)
                        results[f"done{parallel}"] = await wait_completed(session, url, str(run["file_id"]))
                        results[f"server_assembly{parallel}"] = (
                            server_assembly_ms(log, str(run["file_id"])) or 0
                        ) / 1000
                        await pool.execute("DELETE FROM files WHERE id = $1", run["file_id"])
                peak_rss = rss_kib(pid) if pid else {}
                await pool.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    for parallel in (1, 4):
        http, raw = mbps(size, results[f"http{parallel}"]), mbps(size, results[f"raw{parallel}"])
        print(
            f"upload x{parallel}:   HTTP {http:7.1f} MB/s   raw asyncpg INSERT {raw:7.1f} MB/s   ratio {http / raw:.2f}"
        )
    for parallel in (1, 4):
        line = f"completed x{parallel}: {results[f'done{parallel}']:.2f} s from POST complete to COMPLETED"
        if results[f"server_assembly{parallel}"]:
            line += (
                f" (server's assembly {results[f'server_assembly{parallel}']:.2f} s,"
                f" {mbps(size, results[f'server_assembly{parallel}']):.1f} MB/s)"
            )
        print(line)
    product, raw = mbps(size, results["assembly"]), mbps(size, results["assembly_raw"])
    print(
        f"assembly:    worker code {product:7.1f} MB/s   raw asyncpg SELECT + write {raw:7.1f} MB/s   ratio {product / raw:.2f}"
    )
    if base_rss and peak_rss:
        growth = (peak_rss["VmHWM"] - base_rss["VmRSS"]) / 1024
        print(
            f"server RSS:  {base_rss['VmRSS'] / 1024:.0f} MiB at start, peak {peak_rss['VmHWM'] / 1024:.0f} MiB"
            f" (growth {growth:.0f} MiB)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    p.add_argument("--chunk", default="8MiB", help="chunk size (default 8MiB)")
    p.add_argument("--url", help="a running chunkd (needs DATABASE_URL and JWT_SECRET of that server)")
    p.add_argument("--pid", type=int, default=0, help="with --url: the server's pid, for its RSS")
    p.add_argument("--port", type=int, default=18080, help="port of the server the benchmark starts")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
