"""chunkd against @tus/server (with @tus/file-store) on the same machine, in one run.

    .venv/bin/python -m bench.compare                       # 1 GiB, 3 runs of every mode
    .venv/bin/python -m bench.compare --size 256MiB --runs 5
    .venv/bin/python -m bench.compare --pg stock            # chunkd's embedded PostgreSQL on stock settings
    .venv/bin/python -m bench.compare --pg-option max_wal_size=16GB --modes native-x4,tus-js-unchunked

What it does:
  - installs @tus/server, @tus/file-store and tus-js-client from npm into a cache directory (once per
    machine; CHUNKD_BENCH_CACHE, default ~/.cache/chunkd-bench);
  - starts both servers: `chunkd serve` (HTTP and worker in one process, as `make run`) on an embedded
    PostgreSQL with the settings `make run` gives it (fsync on), and @tus/server on a file store;
  - runs every client mode against every server that can take it, interleaved: run r goes through the
    modes starting at a different one each time, so slow minutes of a shared machine fall on all of them;
  - checks the SHA-256 of every stored file against the source's, and removes it before the next upload.
What it prints, per mode, as median [min..max] over the runs:
  upload     MB/s until the client has its last answer;
  durable    MB/s until the bytes survive a crash: for chunkd that is the upload (a chunk is answered
             after its transaction commits, fsync on), for @tus/server the upload followed by `sync`
             (its file store never fsyncs);
  completed  seconds from the last answer to COMPLETED (chunkd's worker: assembled, fsynced, sniffed);
  CPU        CPU-seconds per GiB from /proc, each server apart and chunkd's PostgreSQL apart (all its
             processes: backends, WAL writer, checkpointer), counted from the upload's start to COMPLETED;
then chunkd's peak RSS growth and the ratios of the issue's targets, and chunkd's PostgreSQL CPU per
kind of process (backends, autovacuum, WAL writer, ...) run by run: each server takes every run of the
run in a row, so a cost that grows with the GiB it has taken shows there (--runs 4 --modes one-mode).
--pg-detail also prints PostgreSQL's counters after every chunkd upload (bench/pg_watch.py: WAL bytes
and full-page images, buffers written by backends, file_chunks' TOAST size, dead tuples, autovacuums).
MB is 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from bench import pg_watch
from bench.timing import bench_database, rss_kib, stop
from service import client, embedded, storage
from service.auth import hash_password
from service.config import _bytes
from tests.support import JWT_SECRET, ChunkdProcess, free_port, make_settings, session_token

MB = 1_000_000
MiB = 1024 * 1024
GiB = 1024 * MiB
HERE = Path(__file__).resolve().parent
NPM_PACKAGES = ("@tus/server@2.4.5", "@tus/file-store@2.1.1", "tus-js-client@4.3.1")
CACHE = Path(os.environ.get("CHUNKD_BENCH_CACHE", Path.home() / ".cache" / "chunkd-bench"))
TICK = os.sysconf("SC_CLK_TCK")


# the parts -------------------------------------------------------------------------------------------
def node_modules() -> Path:
    """The npm packages, installed once into the cache (again when a pinned version changes)."""
    prefix = CACHE / "node"
    stamp = prefix / "installed.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != list(NPM_PACKAGES):
        if not (shutil.which("node") and shutil.which("npm")):
            raise SystemExit("bench/compare.py needs node (20.19+) and npm")
        prefix.mkdir(parents=True, exist_ok=True)
        print(f"npm install {' '.join(NPM_PACKAGES)} into {prefix}", flush=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *NPM_PACKAGES],
            check=True,
            capture_output=True,
            timeout=600,
        )
        stamp.write_text(json.dumps(list(NPM_PACKAGES)))
    return prefix / "node_modules"


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (all its threads); with children, also those of its live children
    and of the ones it has reaped (PostgreSQL's backends come and go)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                child = stat.read_text().rsplit(")", 1)[1].split()
                if int(child[1]) == pid:
                    ticks += int(child[11]) + int(child[12])
    return ticks / TICK


@dataclass
class Chunkd:
    """One `chunkd serve` and its own PostgreSQL."""

    process: ChunkdProcess
    url: str
    token: str
    postmaster: int
    storage: Path
    pool: asyncpg.Pool
    processes: pg_watch.ProcessCpu

    async def mark(self) -> tuple[dict[int, tuple[str, float]], dict[str, float]]:
        """PostgreSQL's per-process CPU and counters now, for since()."""
        return self.processes.snapshot(), await pg_watch.counters(self.pool)

    async def since(
        self, mark: tuple[dict[int, tuple[str, float]], dict[str, float]], total_cpu: float
    ) -> pg_watch.Stretch:
        return pg_watch.stretch(
            self.processes.snapshot(), mark[0], await pg_watch.counters(self.pool), mark[1], total_cpu
        )

    def cpu(self) -> dict[str, float]:
        return {
            "chunkd": cpu_seconds(self.process.proc.pid),  # type: ignore[union-attr]
            "postgres": cpu_seconds(self.postmaster, children=True),
        }


@dataclass
class Servers:
    chunkds: dict[str, Chunkd]  # "chunkd"; with --also-stock, "chunkd-stockpg" too
    peer: subprocess.Popen[bytes]
    peer_url: str
    peer_dir: Path
    node_path: Path

    def cpu(self, chunkd: str | None) -> dict[str, float]:
        return {**(self.chunkds[chunkd].cpu() if chunkd else {}), "tus-server": cpu_seconds(self.peer.pid)}


@contextlib.asynccontextmanager
async def start_chunkd(pg_options: dict[str, str], env: dict[str, str]) -> AsyncIterator[Chunkd]:
    async with bench_database(**pg_options) as (url, storage_dir):
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        process = None
        try:
            backend = await pool.fetchval("SELECT pg_backend_pid()")
            postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
            user_id = await pool.fetchval(
                "INSERT INTO users (email, password) VALUES ($1, $2) RETURNING id",
                f"{uuid.uuid4().hex}@bench",
                hash_password("x"),
            )
            # A run outlasts the default access-token lifetime.
            async with pool.acquire() as conn:
                token = await session_token(conn, make_settings(url, storage_dir, ACCESS_TOKEN_TTL="24h"), user_id)
            process = ChunkdProcess(
                {
                    "DATABASE_URL": url,
                    "STORAGE_DIR": str(storage_dir),
                    "JWT_SECRET": JWT_SECRET,
                    "MAX_UPLOAD_SIZE": "64GiB",
                    "LOG_LEVEL": "WARNING",
                    **env,
                },
                "serve",
            ).start()
            with pg_watch.ProcessCpu(postmaster) as processes:
                yield Chunkd(process, process.url, token, postmaster, storage_dir, pool, processes)
        finally:
            stop(process)
            await pool.close()


@contextlib.asynccontextmanager
async def servers(
    work: Path, pg_options: dict[str, str], variants: dict[str, tuple[dict[str, str], dict[str, str]]]
) -> AsyncIterator[Servers]:
    modules = node_modules()
    async with contextlib.AsyncExitStack() as stack:
        chunkds = {"chunkd": await stack.enter_async_context(start_chunkd(pg_options, {}))}
        for name, (options, env) in variants.items():
            chunkds[name] = await stack.enter_async_context(start_chunkd(options, env))
        peer_dir = work / "tus-server-files"
        peer_dir.mkdir()
        port = free_port()
        peer = subprocess.Popen(
            ["node", str(HERE / "tus_peer.mjs"), str(modules), str(peer_dir), str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_listening(port)
            yield Servers(chunkds, peer, f"http://127.0.0.1:{port}/files", peer_dir, modules)
        finally:
            peer.terminate()
            peer.wait(30)


async def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"@tus/server did not listen on {port} within {timeout:g} s")


# one upload ------------------------------------------------------------------------------------------
@dataclass
class Result:
    upload: float  # seconds until the client's last answer
    durable: float  # seconds until the bytes survive a crash
    completed: float | None  # seconds from the last answer to COMPLETED (chunkd)
    cpu: dict[str, float]  # CPU-seconds of each process group over the upload (and processing)
    pg: pg_watch.Stretch | None = None  # chunkd's PostgreSQL over the same stretch


@dataclass
class Mode:
    name: str
    server: str  # "chunkd" or "tus-server"
    run: Callable[[Servers, str, Path, str], Awaitable[Result]]
    notes: list[str] = field(default_factory=list)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


async def tus_js(
    s: Servers, source: Path, endpoint: str, token: str | None, **options: int
) -> tuple[str, float, float]:
    """(upload URL, started, finished) in epoch seconds, as tus-js-client saw them."""
    args = json.dumps({"endpoint": endpoint, "token": token, "file": str(source), **options})
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "tus_js_upload.js"),
        args,
        env={**os.environ, "NODE_PATH": str(s.node_path)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise Unsupported(err.decode(errors="replace").strip().splitlines()[0][:200])
    answer = json.loads(out)
    return answer["url"], answer["started"] / 1000, answer["finished"] / 1000


class Unsupported(Exception):
    """The server cannot take this mode (the peer has no concatenation): reported, not measured."""


async def wait_completed(c: Chunkd, file_id: str) -> float:
    """Epoch seconds when the file became COMPLETED: the time of the worker's transaction (updated_at, the
    file's last change), not when this process got round to looking, which a loaded machine delays."""
    headers = {"Authorization": f"Bearer {c.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        while True:
            async with http.get(f"{c.url}/api/files/{file_id}", params={"wait": "30"}) as r:
                body = await r.json()
            if body["status"] in ("COMPLETED", "FAILED"):
                break
    if body["status"] != "COMPLETED":
        raise SystemExit(f"chunkd FAILED the file: {body['error']}")
    return await c.pool.fetchval("SELECT extract(epoch FROM updated_at)::float8 FROM files WHERE id = $1", file_id)


async def check_chunkd_file(c: Chunkd, file_id: str, sha256: str) -> None:
    path = await c.pool.fetchval("SELECT path FROM files WHERE id = $1", file_id)
    stored = await asyncio.to_thread(sha256_file, storage.LocalStore(c.storage).path(path))
    if stored != sha256:
        raise SystemExit(f"chunkd stored different bytes for {file_id}: sha256 {stored}, source {sha256}")
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {c.token}"}) as http,
        http.delete(f"{c.url}/api/files/{file_id}") as r,
    ):
        assert r.status == 204, await r.text()


def tus_js_mode(**options: int) -> Callable[[Servers, str, Path, str], Awaitable[Result]]:
    async def run(s: Servers, server: str, source: Path, sha256: str) -> Result:
        if server == "tus-server":
            before = s.cpu(None)
            url, started, finished = await tus_js(s, source, s.peer_url, None, **options)
            synced = time.time()
            subprocess.run(["sync"], check=True)
            durable = time.time() - synced
            cpu = s.cpu(None)
            upload_id = url.rsplit("/", 1)[-1]
            stored = await asyncio.to_thread(sha256_file, s.peer_dir / upload_id)
            if stored != sha256:
                raise SystemExit(f"@tus/server stored different bytes: sha256 {stored}, source {sha256}")
            for leftover in s.peer_dir.iterdir():
                leftover.unlink()
            upload = finished - started
            return Result(upload, upload + durable, None, diff(cpu, before))
        c = s.chunkds[server]
        mark = await c.mark()
        before = s.cpu(server)
        url, started, finished = await tus_js(s, source, f"{c.url}/api/tus/", c.token, **options)
        file_id = url.rsplit("/", 1)[-1]
        completed = await wait_completed(c, file_id)
        cpu = s.cpu(server)
        pg = await c.since(mark, cpu["postgres"] - before["postgres"])
        await check_chunkd_file(c, file_id, sha256)
        return Result(finished - started, finished - started, completed - finished, diff(cpu, before), pg)

    return run


def native_mode(parallel: int) -> Callable[[Servers, str, Path, str], Awaitable[Result]]:
    """The bundled client (`chunkd upload`), in this process."""

    async def run(s: Servers, server: str, source: Path, sha256: str) -> Result:
        c = s.chunkds[server]
        state = Path(tempfile.mkdtemp(prefix="chunkd-bench-client-"))
        uploaded: list[float] = []
        mark = await c.mark()
        before = s.cpu(server)
        started = time.time()
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # its progress lines
                file = await client.upload(
                    source,
                    c.url,
                    client.Credentials(c.token),
                    state_dir=state,
                    parallel=parallel,
                    uploaded=lambda: uploaded.append(time.time()),
                )
        finally:
            shutil.rmtree(state, ignore_errors=True)
        cpu = s.cpu(server)
        pg = await c.since(mark, cpu["postgres"] - before["postgres"])
        if file["status"] != "COMPLETED":
            raise SystemExit(f"chunkd FAILED the file: {file['error']}")
        completed = await c.pool.fetchval(
            "SELECT extract(epoch FROM updated_at)::float8 FROM files WHERE id = $1", file["id"]
        )
        await check_chunkd_file(c, file["id"], sha256)
        return Result(uploaded[0] - started, uploaded[0] - started, completed - uploaded[0], diff(cpu, before), pg)

    return run


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


# (client mode, servers that take it, how); "chunkd" stands for every chunkd of the run.
CLIENT_MODES = [
    ("tus-js-unchunked", ("tus-server", "chunkd"), tus_js_mode()),
    ("tus-js-8MiB", ("tus-server", "chunkd"), tus_js_mode(chunkSize=8 * MiB)),
    ("tus-js-parallel4", ("tus-server", "chunkd"), tus_js_mode(parallel=4)),
    ("native-x1", ("chunkd",), native_mode(1)),
    ("native-x2", ("chunkd",), native_mode(2)),
    ("native-x4", ("chunkd",), native_mode(4)),
    ("native-x8", ("chunkd",), native_mode(8)),
]


def modes(chunkds: list[str], wanted: set[str] | None) -> list[Mode]:
    return [
        Mode(name, server, how)
        for name, servers, how in CLIENT_MODES
        if wanted is None or name in wanted
        for server in (s for kind in servers for s in (chunkds if kind == "chunkd" else [kind]))
    ]


# the run ---------------------------------------------------------------------------------------------
def make_source(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for offset in range(0, size, 8 * MiB):
            block = os.urandom(min(8 * MiB, size - offset))
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def median_range(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}..{fmt.format(max(values))}]"


def pg_options(args: argparse.Namespace) -> dict[str, str]:
    options = {} if args.pg == "stock" else embedded.tuned_options()
    for item in args.pg_option:
        key, _, value = item.partition("=")
        options[key] = value
    return options


async def run(args: argparse.Namespace) -> None:
    size = _bytes(1)(args.size)
    wanted = set(args.modes.split(",")) if args.modes else None
    options = pg_options(args)
    variants: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    if args.also_stock:
        variants["chunkd-stockpg"] = ({}, {})
    if args.also_env:
        variants["chunkd-env"] = (options, dict(item.partition("=")[::2] for item in args.also_env))
    chosen = modes(["chunkd", *variants], wanted)
    work = Path(tempfile.mkdtemp(prefix="chunkd-compare-"))
    results: dict[tuple[str, str], list[Result]] = {(m.name, m.server): [] for m in chosen}
    failures: dict[tuple[str, str], str] = {}
    try:
        source = work / "source.bin"
        sha256 = make_source(source, size)
        print(
            f"{size / MB:.0f} MB of random bytes, {args.runs} runs; chunkd's PostgreSQL: "
            f"{' '.join(f'{k}={v}' for k, v in options.items()) or 'stock settings'}; load {load()}",
            flush=True,
        )
        async with servers(work, options, variants) as s:
            for name in s.chunkds:
                await warm_up(s, name, source, sha256)
            pid = s.chunkds["chunkd"].process.proc.pid  # type: ignore[union-attr]
            rss_start = rss_kib(pid)["VmRSS"]
            for r in range(args.runs):
                order = chosen[r % len(chosen) :] + chosen[: r % len(chosen)]
                for mode in order:
                    key = (mode.name, mode.server)
                    if key in failures:
                        continue
                    subprocess.run(["sync"], check=True)  # no dirty pages of the last upload left to pay for
                    try:
                        result = await mode.run(s, mode.server, source, sha256)
                    except Unsupported as e:
                        failures[key] = str(e)
                        print(f"  {mode.server:14} {mode.name:18} not supported: {e}", flush=True)
                        continue
                    results[key].append(result)
                    print(
                        f"  run {r + 1} {mode.server:14} {mode.name:18} upload {size / MB / result.upload:6.0f} MB/s"
                        f"  durable {size / MB / result.durable:6.0f} MB/s"
                        + (f"  COMPLETED +{result.completed:5.2f} s" if result.completed is not None else "")
                        + "  CPU-s/GiB "
                        + " ".join(f"{k} {v / (size / GiB):.1f}" for k, v in result.cpu.items() if v >= 0.05),
                        flush=True,
                    )
                    if result.pg is not None and args.pg_detail:
                        print(result.pg.line(size / GiB), flush=True)
            rss_peak = rss_kib(pid)["VmHWM"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(size, results, failures, rss_start, rss_peak)
    print(f"load average at the end: {load()}")


async def warm_up(s: Servers, name: str, source: Path, sha256: str) -> None:
    """One unmeasured upload, then a checkpoint: a fresh cluster has no WAL segments to recycle and
    creates (zero-fills) every one, which a server that has run for a while does not."""
    await native_mode(4)(s, name, source, sha256)
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await s.chunkds[name].pool.execute("CHECKPOINT")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(
    size: int,
    results: dict[tuple[str, str], list[Result]],
    failures: dict[tuple[str, str], str],
    rss_start: int,
    rss_peak: int,
) -> None:
    gib = size / GiB
    print(
        f"\n{'server':14} {'client mode':18} {'n':>2} {'upload MB/s':>20} {'durable MB/s':>20} "
        f"{'COMPLETED after, s':>22} {'to COMPLETED MB/s':>20}  CPU-s per GiB: server, postgres"
    )
    for (name, server), runs in results.items():
        if not runs:
            print(f"{server:14} {name:18} {'-':>2} {failures.get((name, server), 'no runs')}")
            continue
        own = "tus-server" if server == "tus-server" else "chunkd"
        completed = [r.completed for r in runs if r.completed is not None]
        print(
            f"{server:14} {name:18} {len(runs):2} {median_range([size / MB / r.upload for r in runs]):>20} "
            f"{median_range([size / MB / r.durable for r in runs]):>20} "
            f"{median_range(completed, '{:.2f}') if completed else '-':>22} "
            f"{median_range([size / MB / (r.durable + (r.completed or 0)) for r in runs]) if completed else '-':>20}  "
            f"{median_range([r.cpu[own] / gib for r in runs], '{:.1f}')}, "
            + (median_range([r.cpu["postgres"] / gib for r in runs], "{:.1f}") if own == "chunkd" else "-")
        )

    def best(server: str, measure: Callable[[Result], float]) -> tuple[float, str]:
        medians = [
            (statistics.median([measure(r) for r in runs]), name)
            for (name, srv), runs in results.items()
            if srv == server and runs
        ]
        return min(medians) if medians else (float("nan"), "-")

    peer, peer_mode = best("tus-server", lambda r: r.durable)
    ours, our_mode = best("chunkd", lambda r: r.durable)
    done, done_mode = best("chunkd", lambda r: r.durable + (r.completed or 0))
    print(
        f"\nchunkd RSS: {rss_start / 1024:.0f} MiB at start, peak {rss_peak / 1024:.0f} MiB "
        f"(growth {(rss_peak - rss_start) / 1024:.0f} MiB, target < 100)"
    )
    print(
        f"to durable:   chunkd best ({our_mode}) / @tus/server best ({peer_mode}) = {peer / ours:.2f} (target >= 1.0)"
    )
    print(
        f"to COMPLETED: chunkd best ({done_mode}) / @tus/server durable ({peer_mode}) = {peer / done:.2f} "
        "(target >= 0.8)"
    )
    by_kind(gib, results)
    chunked, whole = results.get(("tus-js-8MiB", "chunkd")), results.get(("tus-js-unchunked", "chunkd"))
    if chunked and whole:
        ratio = statistics.median([r.upload for r in whole]) / statistics.median([r.upload for r in chunked])
        print(f"tus-js-client 8 MiB chunks / unchunked against chunkd = {ratio:.2f} (target >= 0.8)")


def by_kind(gib: float, results: dict[tuple[str, str], list[Result]]) -> None:
    """chunkd's PostgreSQL CPU per GiB per kind of process, run by run in the order measured: a cost
    that grows with every GiB the server has taken shows as a rising row."""
    print("\nchunkd's PostgreSQL, CPU-s per GiB by process, run by run:")
    for (name, server), runs in results.items():
        stretches = [r.pg for r in runs if r.pg is not None]
        if not stretches:
            continue
        kinds = sorted({k for p in stretches for k, v in p.cpu.items() if v / gib >= 0.05})
        cells = [f"{k} " + " ".join(f"{p.cpu.get(k, 0.0) / gib:.1f}" for p in stretches) for k in kinds]
        print(f"  {server:14} {name:18} " + " | ".join(cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    p.add_argument("--runs", type=int, default=3, help="runs of every mode (default 3)")
    p.add_argument("--modes", help=f"comma-separated subset of: {', '.join(name for name, _, _ in CLIENT_MODES)}")
    p.add_argument(
        "--pg",
        choices=("tuned", "stock"),
        default="tuned",
        help="chunkd's embedded PostgreSQL as `make run` sets it up (tuned), or on stock settings",
    )
    p.add_argument(
        "--also-stock",
        action="store_true",
        help="a second chunkd on a PostgreSQL with stock settings, interleaved with the first",
    )
    p.add_argument(
        "--also-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a second chunkd (chunkd-env) with this in its environment (repeatable), interleaved",
    )
    p.add_argument(
        "--pg-detail",
        action="store_true",
        help="after every chunkd upload, its PostgreSQL's CPU per kind of process and its counters",
    )
    p.add_argument(
        "--pg-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL setting on top (repeatable), to measure a variant",
    )
    args = p.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
