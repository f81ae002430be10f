"""What a normal user sees while others abuse chunkd, against a quiet run in the same invocation.

    .venv/bin/python -m bench.abuse [SECONDS] [--phases quiet,load,...] [--server CHECKOUT] [--env K=V]

Starts its own PostgreSQL and a fresh `chunkd serve` for every phase (so the server's peak RSS is the
phase's), and in each phase runs the same normal user for SECONDS (default 15): native uploads of
1 MiB in 256 KiB chunks, tus uploads of 1 MiB in one PATCH, status polls with If-None-Match and
GET /api/users/me. The phases:

  quiet     the normal user alone: the reference
  load      (a) 50 other users uploading (native and tus, 4 MiB files) with a poller each
  trickle   (b) one user opening 100 tus PATCHes and 100 chunk PUTs that send a byte a second
  polls     200 pollers of one COMPLETED file, each sending the ETag of its last answer: requests
            per second, and how many were answered 200 instead of 304 (item 6 of issue 11)
  status    (item 6) 4 pollers of COMPLETED files (a GET, then one with its ETag, 50 a second),
            alone and then while 50 other users upload from a process of their own (not by default)
  full-disk (c) root only: STORAGE_DIR on a 16 MiB tmpfs, a 24 MiB upload that cannot be assembled
            for 45 s (its state and backoff steps then), then the tmpfs enlarged: seconds from enlarging to COMPLETED, and the SHA-256 checked

Prints, per phase, p50/p99 per request kind of the normal user, its errors by status, the server's
peak RSS, and each figure's ratio to the quiet phase. --server runs chunkd from another checkout
(`--server /work/main` against this one: a before/after pair on the same machine minutes apart);
--env passes settings to it."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from multidict import CIMultiDict

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
    ) -> tuple[int, CIMultiDict[str], bytes]:
        started = time.perf_counter()
        try:
            async with http.request(method, url, **kwargs) as r:
                body = await r.read()
                status, headers = r.status, CIMultiDict(r.headers)  # aiohttp's parser spells it Etag
        except (TimeoutError, aiohttp.ClientError):
            status, headers, body = 599, CIMultiDict(), b""
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


async def pollers(
    base: str, auth: dict[str, str], file_id: str, count: int, seconds: float
) -> tuple[float, Tally, int]:
    """(item 6) `count` pollers of one unchanged file, each sending the ETag of its last answer, as a
    UI does: requests per second, their latencies, and how many were answered 200 instead of 304."""
    tally = Tally()
    stop_at = time.monotonic() + seconds
    full = 0
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{base}/api/files/{file_id}", headers=auth) as r:
            first = r.headers["ETag"]

        async def one() -> None:
            nonlocal full
            etag = first
            while time.monotonic() < stop_at:
                status, headers, _ = await tally.call(
                    http,
                    "GET file (If-None-Match)",
                    "GET",
                    f"{base}/api/files/{file_id}",
                    (200, 304),
                    headers={**auth, "If-None-Match": etag},
                )
                if status == 200:
                    full += 1
                    etag = headers["ETag"]

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.monotonic() - started
    return sum(len(v) for v in tally.ms.values()) / elapsed, tally, full


async def status_polls(base: str, auth: dict[str, str], file_ids: list[str], seconds: float) -> Tally:
    """(item 6) one poller per file, each asking for the view (200) and then with its ETag (304), 50
    times a second at most: the latencies a UI polling its files sees."""
    tally = Tally()
    stop_at = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def one(file_id: str) -> None:
            url = f"{base}/api/files/{file_id}"
            while time.monotonic() < stop_at:
                _, headers, _ = await tally.call(http, "GET file (200)", "GET", url, (200,), headers=auth)
                etag = headers.get("ETag", "")
                await tally.call(http, "GET file (304)", "GET", url, (304,), headers={**auth, "If-None-Match": etag})
                await asyncio.sleep(0.02)

        await asyncio.gather(*(one(f) for f in file_ids))
    return tally


def uploaders_process(base: str, auths: list[dict[str, str]], seconds: float, out: Any) -> None:
    """A process of its own for the 50 uploaders, so that their client work never delays the
    measuring client's event loop (both still share the machine's cores with the server)."""
    tally = asyncio.run(other_uploaders(base, auths, time.monotonic() + seconds))
    out.put((sum(len(v) for v in tally.ms.values()), dict(tally.errors)))


async def completed_files(base: str, auth: dict[str, str], count: int) -> list[str]:
    """`count` small COMPLETED files of the user (an unchanged file is what a poller mostly sees)."""
    ids = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            tally = Tally()
            file_id = await native_upload(http, base, auth, tally, os.urandom(64 * KiB))
            assert file_id is not None and not tally.errors, tally.errors
            ids.append(file_id)
        for file_id in ids:
            for _ in range(600):
                async with http.get(f"{base}/api/files/{file_id}", headers=auth) as r:
                    if (await r.json())["status"] == "COMPLETED":
                        break
                await asyncio.sleep(0.05)
    return ids


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


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == parent:
                    found.append(int(entry.name))
    return found


class Cpu:
    """CPU seconds the server and PostgreSQL (the postmaster's children) spent while the block ran: per
    request, a figure the other processes on the machine change much less than latencies."""

    def __init__(self, server_pid: int, postmaster_pid: int) -> None:
        self.server_pid, self.postmaster_pid = server_pid, postmaster_pid
        self.server = self.database = 0.0

    def _now(self) -> tuple[float, dict[int, float]]:
        return cpu_seconds(self.server_pid), {pid: cpu_seconds(pid) for pid in children(self.postmaster_pid)}

    def __enter__(self) -> Cpu:
        self._server, self._database = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        server, database = self._now()
        self.server = server - self._server
        self.database = sum(seconds - self._database.get(pid, 0.0) for pid, seconds in database.items())

    def per_request(self, requests: int) -> str:
        return (
            f"CPU per request: server {self.server / requests * 1e6:.0f} µs,"
            f" PostgreSQL {self.database / requests * 1e6:.0f} µs"
        )


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


FULL_DISK_SECONDS = 45


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
            # Full for longer than the 5 attempts of a transient error would last (2+4+8+16 s): the worker backs
            # off without counting them (issue 11: an environment fault never fails a file).
            await asyncio.sleep(FULL_DISK_SECONDS)
            status, attempts, reason, steps = await conn.fetchrow(
                "SELECT status, attempts, blocked_reason, blocked_retries FROM files WHERE id = $1", file_id
            )
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
            f"full disk for {FULL_DISK_SECONDS} s: {status} with {chunks} chunks, blocked {reason} after {steps} "
            f"backoff steps, {attempts} attempts used; {now} {took:.1f} s after enlarging; "
            f"SHA-256 {'matches' if same else 'DIFFERS'}"
        )
    finally:
        stop(server)
        subprocess.run(["umount", str(mount)], check=False)


PHASES = ("quiet", "load", "trickle", "polls", "status", "full-disk")


@dataclass
class Bench:
    url: str
    storage: Path
    conn: asyncpg.Connection
    normal: dict[str, str]
    seconds: float
    cwd: Path | None  # another checkout's server (a before/after pair), or this one
    env: dict[str, str]
    postmaster: int = 0

    def serve(self) -> ChunkdProcess:
        env = {"DATABASE_URL": self.url, "STORAGE_DIR": str(self.storage), "JWT_SECRET": JWT_SECRET, **SERVER_ENV}
        return ChunkdProcess({**env, **self.env}, "serve", **({"cwd": self.cwd} if self.cwd else {})).start()

    async def users(self, count: int) -> list[dict[str, str]]:
        return [await make_user(self.conn, self.url, self.storage) for _ in range(count)]


async def quiet_phase(bench: Bench) -> tuple[Tally, int]:
    server = bench.serve()
    try:
        async with Peak(server.proc.pid) as peak:  # type: ignore[union-attr]
            quiet_tally = await normal_user(server.url, bench.normal, bench.seconds)
        report("quiet", quiet_tally, peak.kib, None)
        return quiet_tally, peak.kib
    finally:
        stop(server)


async def load_phase(bench: Bench, quiet: tuple[Tally, int] | None) -> None:
    others = await bench.users(50)
    server = bench.serve()
    try:
        async with Peak(server.proc.pid) as peak:  # type: ignore[union-attr]
            load = asyncio.create_task(other_uploaders(server.url, others, time.monotonic() + bench.seconds))
            tally = await normal_user(server.url, bench.normal, bench.seconds)
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


async def trickle_phase(bench: Bench, quiet: tuple[Tally, int] | None) -> None:
    abuser = (await bench.users(1))[0]
    server = bench.serve()
    try:
        async with Peak(server.proc.pid) as peak, trickling(server, abuser, server.url, 100, 100) as statuses:  # type: ignore[union-attr]
            await asyncio.sleep(1)
            tally = await normal_user(server.url, bench.normal, bench.seconds)
        report(
            "trickle (b): 100 PATCHes + 100 PUTs at 1 B/s from one user",
            tally,
            peak.kib,
            quiet,
            f"the trickler's answers: {dict(statuses)}",
        )
    finally:
        stop(server)


async def polls_phase(bench: Bench) -> None:
    server = bench.serve()
    try:
        [file_id] = await completed_files(server.url, bench.normal, 1)
        with Cpu(server.proc.pid, bench.postmaster) as cpu:  # type: ignore[union-attr]
            async with Peak(server.proc.pid) as peak:  # type: ignore[union-attr]
                rate, tally, full = await pollers(server.url, bench.normal, file_id, 200, min(bench.seconds, 10))
        total = sum(len(v) for v in tally.ms.values())
        report(
            "polls: 200 pollers with If-None-Match",
            tally,
            peak.kib,
            None,
            f"{rate:.0f} req/s, {full} of {total} were 200; {cpu.per_request(total)}",
        )
    finally:
        stop(server)


async def status_phase(bench: Bench) -> None:
    """(item 6) a poller per file of the normal user's, alone and then with 50 uploads in flight."""
    others = await bench.users(50)
    server = bench.serve()
    try:
        file_ids = await completed_files(server.url, bench.normal, 4)
        with Cpu(server.proc.pid, bench.postmaster) as cpu:  # type: ignore[union-attr]
            async with Peak(server.proc.pid) as quiet_peak:  # type: ignore[union-attr]
                alone = await status_polls(server.url, bench.normal, file_ids, bench.seconds)
        count = sum(len(v) for v in alone.ms.values())
        report("status alone: 4 pollers, 200 then 304", alone, quiet_peak.kib, None, cpu.per_request(count))
        spawn = multiprocessing.get_context("spawn")
        out = spawn.Queue()
        uploaders = spawn.Process(target=uploaders_process, args=(server.url, others, bench.seconds + 3, out))
        uploaders.start()
        try:
            await asyncio.sleep(3)  # all 50 under way
            async with Peak(server.proc.pid) as peak:  # type: ignore[union-attr]
                tally = await status_polls(server.url, bench.normal, file_ids, bench.seconds)
            requests, errors = await asyncio.to_thread(out.get, True, 120)
        finally:
            uploaders.join(120)
        report(
            "status under load: the same pollers, 50 uploads in flight",
            tally,
            peak.kib,
            (alone, quiet_peak.kib),
            f"uploaders' requests {requests}, their errors: {errors or 'none'}",
        )
    finally:
        stop(server)


async def full_disk_phase(bench: Bench) -> None:
    if os.geteuid() != 0:
        print("\n== full disk (c): skipped (needs root to mount a tmpfs)")
        return
    parent = scratch_dir("chunkd-bench-tmpfs-")
    try:
        print("\n== full disk (c): " + await full_disk(bench.url, bench.conn, bench.normal, parent))
    finally:
        shutil.rmtree(parent, ignore_errors=True)


async def run(seconds: float, phases: list[str], cwd: Path | None, env: dict[str, str]) -> None:
    async with bench_database() as (url, storage):
        conn = await asyncpg.connect(url)
        bench = Bench(url, storage, conn, await make_user(conn, url, storage), seconds, cwd, env)
        bench.postmaster = int(
            Path(f"/proc/{await conn.fetchval('SELECT pg_backend_pid()')}/stat")
            .read_text()
            .rpartition(")")[2]
            .split()[1]
        )
        print(f"server from {cwd or 'this checkout'}, env {env or '{}'}; load average {os.getloadavg()}")
        quiet = await quiet_phase(bench) if "quiet" in phases else None
        if "load" in phases:
            await load_phase(bench, quiet)
        if "trickle" in phases:
            await trickle_phase(bench, quiet)
        if "polls" in phases:
            await polls_phase(bench)
        if "status" in phases:
            await status_phase(bench)
        if "full-disk" in phases:
            await full_disk_phase(bench)
        print(f"\nload average {os.getloadavg()}")
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=15, help="length of each phase")
    parser.add_argument("--phases", default="quiet,load,trickle,polls,full-disk", help=f"some of {','.join(PHASES)}")
    parser.add_argument("--server", type=Path, help="run the server from this checkout (a before/after pair)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server, repeatable")
    args = parser.parse_args()
    phases = args.phases.split(",")
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}")
    env = dict(item.split("=", 1) for item in args.env)
    asyncio.run(run(args.seconds, phases, args.server, env))


if __name__ == "__main__":
    main()
