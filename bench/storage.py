"""Blob storage figures: a 1 GiB upload assembled into Ceph RGW (S3) against the same into a local directory,
and its download through chunkd against a direct ranged GET from RGW, in one run.

    .venv/bin/python bench/storage.py [--size 1GiB] [--chunk 8MiB] [--runs 2]

Starts its own embedded PostgreSQL and single-node Ceph RGW (memstore, in memory; tests/ceph.py), inserts the
upload's chunks straight into file_chunks, then:
- assembly: service.assembly (append_chunks into an Assembly), exactly as the worker runs it
  (hash, local working copy, store writer), into a LocalStore and into the S3Store; best of --runs each.
- download: `chunkd serve --no-worker` on the bucket streams GET /api/files/{id}/content; the reference is a
  ranged GET (bytes=0-end) of the same object straight from RGW with aiobotocore. Both read to the end in
  1 MiB pieces; best of --runs each, alternating. Target: through chunkd >= 0.8 of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import bench_database, stop  # noqa: E402
from service import storage  # noqa: E402
from service.assembly import Assembly, append_chunks  # noqa: E402
from service.config import MiB, _bytes, load_settings  # noqa: E402
from service.storage import LocalStore  # noqa: E402
from service.storage.s3 import S3Store  # noqa: E402
from service.store.workers import list_chunk_lengths  # noqa: E402
from tests import ceph  # noqa: E402
from tests.support import ChunkdProcess, session_token  # noqa: E402

MB = 1_000_000
READ = 1 * MiB


def mbps(size: int, seconds: float) -> float:
    return size / MB / seconds


async def insert_upload(pool: asyncpg.Pool, user_id: str, size: int, chunk: int) -> tuple[str, str, str]:
    """A COMPLETED-to-be file whose chunks hold `size` random bytes: (id, blob name, sha256)."""
    name = storage.new_blob_name()
    file_id = await pool.fetchval(
        "INSERT INTO files (original_name, filename, path, mimetype, type, status, size, chunk_size, uploaded_by_id)"
        " VALUES ('bench.bin', $1, $2, 'application/octet-stream', 'OTHER', 'UPLOADING', $3, $4, $5) RETURNING id",
        name,
        storage.blob_key(name),
        size,
        chunk,
        user_id,
    )
    digest = hashlib.sha256()
    for index, start in enumerate(range(0, size, chunk)):
        data = os.urandom(min(chunk, size - start))
        digest.update(data)
        await pool.execute(
            "INSERT INTO file_chunks (file_id, chunk_index, data) VALUES ($1, $2, $3)", file_id, index, data
        )
    return file_id, name, digest.hexdigest()


async def assembly_seconds(
    pool: asyncpg.Pool,
    file_id: str,
    store,
    key: str,
    work: Path,
    size: int,
    sha: str,
) -> float:
    started = time.perf_counter()
    async with pool.acquire() as conn:
        chunks = await list_chunk_lengths(conn, file_id)
        assembly = await Assembly.begin(store, key, work, size)
        await append_chunks(conn, file_id, chunks, assembly)
        digest = await assembly.finish()
        await assembly.commit()
    seconds = time.perf_counter() - started
    assert digest == sha, "assembled bytes differ"
    return seconds


async def read_all(pieces) -> tuple[int, str]:
    digest, total = hashlib.sha256(), 0
    async for piece in pieces:
        digest.update(piece)
        total += len(piece)
    return total, digest.hexdigest()


async def through_chunkd(url: str, token: str, file_id: str) -> tuple[float, str]:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(f"{url}/api/files/{file_id}/content", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200, await r.text()
            _, digest = await read_all(r.content.iter_chunked(READ))
        return time.perf_counter() - started, digest


async def direct(store: S3Store, key: str, size: int) -> tuple[float, str]:
    client = await store.client()
    started = time.perf_counter()
    response = await client.get_object(Bucket=store.bucket, Key=store.full(key), Range=f"bytes=0-{size - 1}")
    body = response["Body"]

    async def pieces():
        while piece := await body.read(READ):
            yield piece

    _, digest = await read_all(pieces())
    body.close()
    return time.perf_counter() - started, digest


async def run(args: argparse.Namespace) -> None:
    size, chunk = _bytes(1)(args.size), _bytes(1)(args.chunk)
    scratch = Path(tempfile.mkdtemp(prefix="chunkd-bench-storage-"))
    rgw = ceph.CephRGW(scratch / "ceph", memstore_bytes=max(4 << 30, 6 * size)).start()
    server, closing = None, []
    try:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        await ceph.create_bucket(rgw, bucket)
        env = rgw.environment(bucket, "chunkd")
        async with bench_database() as (database_url, local_dir):
            secret = "bench-" + uuid.uuid4().hex * 2
            settings = load_settings(
                {"DATABASE_URL": database_url, "JWT_SECRET": secret, "STORAGE_DIR": str(scratch / "node"), **env},
                dotenv=None,
            )
            pool = await asyncpg.create_pool(database_url, min_size=2, max_size=2)
            user_id = await pool.fetchval(
                "INSERT INTO users (email, password) VALUES ('bench@example.com', 'x') RETURNING id"
            )
            print(f"file: {size / MB:.0f} MB of random bytes in chunks of {chunk / MiB:g} MiB", flush=True)
            file_id, name, sha = await insert_upload(pool, user_id, size, chunk)
            await pool.execute("VACUUM file_chunks")
            key = storage.blob_key(name)
            local, s3 = LocalStore(local_dir), S3Store.from_settings(settings)
            closing.append(s3.close)
            times: dict[str, list[float]] = {"local": [], "s3": []}
            for _ in range(args.runs):
                for label, store in (("local", local), ("s3", s3)):
                    times[label].append(
                        await assembly_seconds(pool, file_id, store, key, settings.work_path, size, sha)
                    )
                    print(f"  assembly into {label}: {mbps(size, times[label][-1]):.1f} MB/s", flush=True)
            await pool.execute(
                "UPDATE files SET status = 'COMPLETED', url = '/api/files/' || id || '/content' WHERE id = $1", file_id
            )
            await pool.execute("DELETE FROM file_chunks WHERE file_id = $1", file_id)
            server = ChunkdProcess(
                {
                    "DATABASE_URL": database_url,
                    "JWT_SECRET": secret,
                    "LOG_LEVEL": "WARNING",
                    "STORAGE_DIR": str(scratch / "server"),
                    **env,
                },
                "serve",
                "--no-worker",
            ).start()
            async with pool.acquire() as conn:
                token = await session_token(conn, settings, user_id)
            downloads: dict[str, list[float]] = {"chunkd": [], "direct": []}
            for _ in range(args.runs):
                for label in ("direct", "chunkd"):
                    seconds, digest = await (
                        direct(s3, key, size) if label == "direct" else through_chunkd(server.url, token, file_id)
                    )
                    assert digest == sha, f"{label} download differs"
                    downloads[label].append(seconds)
                    print(f"  download {label}: {mbps(size, seconds):.1f} MB/s", flush=True)
            await pool.close()
    finally:
        for close in closing:
            await close()
        stop(server)
        rgw.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    a_local, a_s3 = mbps(size, min(times["local"])), mbps(size, min(times["s3"]))
    d_chunkd, d_direct = mbps(size, min(downloads["chunkd"])), mbps(size, min(downloads["direct"]))
    print()
    print(
        f"assembly:  into RGW {a_s3:7.1f} MB/s   into a local directory {a_local:7.1f} MB/s   ratio {a_s3 / a_local:.2f}"
    )
    print(
        f"download:  through chunkd {d_chunkd:7.1f} MB/s   direct ranged GET from RGW {d_direct:7.1f} MB/s   "
        f"ratio {d_chunkd / d_direct:.2f} (target >= 0.8)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1GiB", help="upload size (default 1GiB)")
    p.add_argument("--chunk", default="8MiB", help="chunk size (default 8MiB)")
    p.add_argument("--runs", type=int, default=2, help="measurements of each, best kept (default 2)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
