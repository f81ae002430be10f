"""What a normal user sees while others abuse chunkd, against a quiet run in the same invocation.

    .venv/bin/python -m bench.abuse [SECONDS]

Starts its own PostgreSQL and a fresh `chunkd serve` for every phase (so the server's peak RSS is the
phase's), and in each phase runs the same normal user for SECONDS (default 15): native uploads of
1 MiB in 256 KiB chunks, tus uploads of 1 MiB in one PATCH, status polls with If-None-Match and
GET /api/users/me. The phases:

  quiet     the normal user alone: the reference
  load      (a) 50 other users uploading (native and tus, 4 MiB files) with a poller each
  trickle   (b) one user opening 100 tus PATCHes and 100 chunk PUTs that send a byte a second
  polls     200 pollers with If-None-Match on one file: requests per second (item 6 of issue 11)
  full-disk (c) root only: STORAGE_DIR on a 16 MiB tmpfs, a 24 MiB upload that cannot be assembled,
            then the tmpfs enlarged: seconds from enlarging to COMPLETED, and the SHA-256 checked

Prints, per phase, p50/p99 per request kind of the normal user, its errors by status, the server's
peak RSS, and each figure's ratio to the quiet phase."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.timing import bench_database, rss_kib, stop
from service.auth import hash_password
from tests.support import JWT_SECRET, ChunkdProcess, make_settings, scratch_dir, session_token

KiB, MiB = 1024, 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
STREAM = {"Content-Type": "application/offset+octet-stream"}
SERVER_ENV = {"DEFAULT_CHUNK_SIZE": "256KiB", "LOG_LEVEL": "WARNING", "WORKER_LEASE": "6s"}


@dataclass
class Tally:
    """Latencies (ms) per request kind and errors by (kind, status), of one user's traffic."""

    ms: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)

    async def call(
        self, http: aiohttp.ClientSession, kind: str, method: str, url: str, ok: tuple[int, ...], **kwargs: Any
    ) -> tuple[int, dict[str, str], bytes]:
        started = time.perf_counter()
        try:
            async with http.request(method, url, **kwargs) as r:
                body = await r.read()
                status, headers = r.status, dict(r.headers)
        except (TimeoutError, aiohttp.ClientError):
            status, headers, body = 599, {}, b""
        self.ms[kind].append((time.perf_counter() - started) * 1000)
        if status not in ok:
            self.errors[(kind, status)] += 1
        return status, headers, body


async def make_user(conn: asyncpg.Connection, url: str, storage: Path) -> dict[str, str]:
    user_id = await conn.fetchval(
        "INSERT INTO users (email, password, name) VALUES ($1, $2, 'bench') RETURNING id",
        f"{uuid.uuid4().hex}@bench",
        hash_password("x"),
    )
    token = await session_token(conn, make_settings(url, storage, JWT_SECRET=JWT_SECRET), user_id)
    return {"Authorization": f"Bearer {token}"}


async def native_upload(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str], tally: Tally, data: bytes, chunk: int = 256 * KiB
) -> str | None:
    status, _, body = await tally.call(
        http,
        "POST /api/uploads",
        "POST",
        f"{base}/api/uploads",
        (201,),
        headers=auth,
        json={"filename": "n.bin", "size": len(data), "chunk_size": chunk},
    )
    if status != 201:
        return None
    file_id = json.loads(body)["id"]
    for i in range(0, len(data), chunk):
        await tally.call(
            http,
            "PUT chunk",
            "PUT",
            f"{base}/api/uploads/{file_id}/chunks/{i // chunk}",
            (201,),
            headers=auth,
            data=data[i : i + chunk],
        )
    await tally.call(http, "POST complete", "POST", f"{base}/api/uploads/{file_id}/complete", (202,), headers=auth)
    return file_id


async def tus_upload(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str], tally: Tally, data: bytes
) -> str | None:
    status, headers, _ = await tally.call(
        http, "POST tus", "POST", f"{base}/api/tus/", (201,), headers={**auth, **TUS, "Upload-Length": str(len(data))}
    )
    if status != 201:
        return None
    location = headers["Location"]
    path = "/api/tus/" + location.rsplit("/", 1)[-1]
    await tally.call(
        http,
        "PATCH tus",
        "PATCH",
        base + path,
        (204,),
        data=data,
        headers={**auth, **TUS, **STREAM, "Upload-Offset": "0"},
    )
    return location.rsplit("/", 1)[-1]


async def poll(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str], tally: Tally, file_id: str, times: int
) -> None:
    etag = None
    for _ in range(times):
        headers = {**auth, **({"If-None-Match": etag} if etag else {})}
        _, got, _ = await tally.call(
            http, "GET file", "GET", f"{base}/api/files/{file_id}", (200, 304), headers=headers
        )
        etag = got.get("ETag", etag)


async def normal_user(base: str, auth: dict[str, str], seconds: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while time.monotonic() < deadline:
            await tally.call(http, "GET me", "GET", f"{base}/api/users/me", (200,), headers=auth)
            for upload in (native_upload, tus_upload):
                file_id = await upload(http, base, auth, tally, os.urandom(MiB))
                if file_id:
                    await poll(http, base, auth, tally, file_id, 5)
    return tally


async def other_uploaders(base: str, auths: list[dict[str, str]], stop_at: float) -> Tally:
    """(a): each user uploads 4 MiB files in a loop, native and tus alternately, and polls each."""
    tally = Tally()

    async def one(index: int, auth: dict[str, str]) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            while time.monotonic() < stop_at:
                upload = native_upload if index % 2 else tus_upload
                file_id = await upload(http, base, auth, tally, os.urandom(4 * MiB))
                if file_id:
                    await poll(http, base, auth, tally, file_id, 3)

    await asyncio.gather(*(one(i, a) for i, a in enumerate(auths)))
    return tally


@contextlib.asynccontextmanager
async def trickling(
    server: ChunkdProcess, auth: dict[str, str], base: str, patches: int, puts: int
) -> AsyncIterator[collections.Counter[int]]:
    """(b): one user's requests announcing 64 MiB and sending a byte a second; yields the statuses those
    that were answered got (429 for most: the per-user bound)."""
    statuses: collections.Counter[int] = collections.Counter()
    sockets: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    async with aiohttp.ClientSession() as http:
        heads = []
        for _ in range(patches):
            async with http.post(f"{base}/api/tus/", headers={**auth, **TUS, "Upload-Length": str(64 * MiB)}) as r:
                path = "/api/tus/" + r.headers["Location"].rsplit("/", 1)[-1]
            heads.append(
                f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            )
        async with http.post(
            f"{base}/api/uploads",
            headers=auth,
            json={"filename": "t.bin", "size": puts * 8 * MiB, "chunk_size": 8 * MiB},
        ) as r:
            native_id = (await r.json())["id"]
        heads += [f"PUT /api/uploads/{native_id}/chunks/{i} HTTP/1.1\r\nHost: x\r\n" for i in range(puts)]
    for head in heads:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write((head + f"Authorization: {auth['Authorization']}\r\nContent-Length: {8 * MiB}\r\n\r\n").encode())
        sockets.append((reader, writer))

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"x")
                await writer.drain()
                with contextlib.suppress(asyncio.TimeoutError):
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                    if line.startswith(b"HTTP/"):
                        statuses[int(line.split()[1])] += 1
                        return

    tasks = [asyncio.create_task(trickle(r, w)) for r, w in sockets]
    try:
        yield statuses
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, writer in sockets:
            writer.close()


async def pollers(base: str, auth: dict[str, str], file_id: str, count: int, seconds: float) -> tuple[float, Tally]:
    tally = Tally()
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{base}/api/files/{file_id}", headers=auth) as r:
            etag = r.headers["ETag"]

        async def one() -> None:
            while time.monotonic() < stop_at:
                await tally.call(
                    http,
                    "GET file (304)",
                    "GET",
                    f"{base}/api/files/{file_id}",
                    (304,),
                    headers={**auth, "If-None-Match": etag},
                )

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.monotonic() - started
    return sum(len(v) for v in tally.ms.values()) / elapsed, tally


class Peak:
    """The server's RSS, sampled every 100 ms while the block runs (VmHWM of a fresh process too)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.kib = pid, 0

    async def __aenter__(self) -> Peak:
        self._task = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.kib = max(self.kib, rss_kib(self.pid)["VmHWM"])
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def report(name: str, tally: Tally, rss_kib_peak: int, quiet: tuple[Tally, int] | None, extra: str = "") -> None:
    print(
        f"\n== {name}: server peak RSS {rss_kib_peak / 1024:.0f} MiB"
        + (f" (x{rss_kib_peak / quiet[1]:.2f} of quiet)" if quiet else "")
        + (f"; {extra}" if extra else "")
    )
    for kind in sorted(tally.ms):
        p50, p99 = quantile(tally.ms[kind], 0.5), quantile(tally.ms[kind], 0.99)
        line = f"  {kind:<16} n={len(tally.ms[kind]):<5} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms"
        if quiet and quiet[0].ms.get(kind):
            q50, q99 = quantile(quiet[0].ms[kind], 0.5), quantile(quiet[0].ms[kind], 0.99)
            line += f"   (x{p50 / q50:.2f} / x{p99 / q99:.2f} of quiet)"
        print(line)
    errors = ", ".join(f"{kind} {status}: {n}" for (kind, status), n in sorted(tally.errors.items())) or "none"
    print(f"  normal user's errors: {errors}")


async def full_disk(url: str, conn: asyncpg.Connection, auth: dict[str, str], storage_parent: Path) -> str:
    """(c): returns a one-line result."""
    mount = storage_parent / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    server = None
    try:
        server = ChunkdProcess(
            {"DATABASE_URL": url, "STORAGE_DIR": str(mount), "JWT_SECRET": JWT_SECRET, **SERVER_ENV}, "serve"
        ).start()
        base = server.url
        data = os.urandom(24 * MiB)
        tally = Tally()
        async with aiohttp.ClientSession() as http:
            file_id = await native_upload(http, base, auth, tally, data, chunk=4 * MiB)
            assert file_id is not None
            await asyncio.sleep(8)  # the worker meets a full disk and backs off
            status = await conn.fetchval("SELECT status FROM files WHERE id = $1", file_id)
            chunks = await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", file_id)
            subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
            enlarged = time.monotonic()
            while (now := await conn.fetchval("SELECT status FROM files WHERE id = $1", file_id)) == "PROCESSING":
                if time.monotonic() - enlarged > 400:
                    break
                await asyncio.sleep(0.2)
            took = time.monotonic() - enlarged
            async with http.get(f"{base}/api/files/{file_id}/content", headers=auth) as r:
                same = hashlib.sha256(await r.read()).hexdigest() == hashlib.sha256(data).hexdigest()
        return (
            f"full disk: {status} with {chunks} chunks while full; {now} {took:.1f} s after enlarging; "
            f"SHA-256 {'matches' if same else 'DIFFERS'}"
        )
    finally:
        stop(server)
        subprocess.run(["umount", str(mount)], check=False)


async def run(seconds: float) -> None:
    async with bench_database() as (url, storage):
        conn = await asyncpg.connect(url)
        normal = await make_user(conn, url, storage)

        def serve() -> ChunkdProcess:
            return ChunkdProcess(
                {"DATABASE_URL": url, "STORAGE_DIR": str(storage), "JWT_SECRET": JWT_SECRET, **SERVER_ENV}, "serve"
            ).start()

        server = serve()
        try:
            async with Peak(server.proc.pid) as peak:  # type: ignore[union-attr]
                quiet_tally = await normal_user(server.url, normal, seconds)
            quiet = (quiet_tally, peak.kib)
            report("quiet", quiet_tally, peak.kib, None)
        finally:
            stop(server)

        others = [await make_user(conn, url, storage) for _ in range(50)]
        server = serve()
        try:
            async with Peak(server.proc.pid) as peak:  # type: ignore[union-attr]
                load = asyncio.create_task(other_uploaders(server.url, others, time.monotonic() + seconds))
                tally = await normal_user(server.url, normal, seconds)
                load_tally = await load
            report(
                "load (a): 50 uploaders with pollers",
                tally,
                peak.kib,
                quiet,
                f"their errors: {dict(load_tally.errors) or 'none'}",
            )
        finally:
            stop(server)

        abuser = await make_user(conn, url, storage)
        server = serve()
        try:
            async with Peak(server.proc.pid) as peak, trickling(server, abuser, server.url, 100, 100) as statuses:  # type: ignore[union-attr]
                await asyncio.sleep(1)
                tally = await normal_user(server.url, normal, seconds)
            report(
                "trickle (b): 100 PATCHes + 100 PUTs at 1 B/s from one user",
                tally,
                peak.kib,
                quiet,
                f"the trickler's answers: {dict(statuses)}",
            )
        finally:
            stop(server)

        server = serve()
        try:
            async with aiohttp.ClientSession() as http:
                file_id = await tus_upload(http, server.url, normal, Tally(), b"")
            async with Peak(server.proc.pid) as peak:  # type: ignore[union-attr]
                rate, tally = await pollers(server.url, normal, file_id or "", 200, min(seconds, 10))
            report("polls: 200 pollers with If-None-Match", tally, peak.kib, None, f"{rate:.0f} req/s")
        finally:
            stop(server)

        if os.geteuid() == 0:
            parent = scratch_dir("chunkd-bench-tmpfs-")
            try:
                print("\n== full disk (c): " + await full_disk(url, conn, normal, parent))
            finally:
                shutil.rmtree(parent, ignore_errors=True)
        else:
            print("\n== full disk (c): skipped (needs root to mount a tmpfs)")
        await conn.close()


def main() -> None:
    asyncio.run(run(float(sys.argv[1]) if len(sys.argv) > 1 else 15))


if __name__ == "__main__":
    main()
