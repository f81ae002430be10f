"""PostgreSQL's CPU per GiB of chunk bytes, split into store, read (assembly) and delete, for ways of
keeping them: row size, INSERT vs binary COPY, DELETE vs dropping a whole partition.

    .venv/bin/python -m bench.pg_bytes                    # 1 GiB, every variant, 2 runs
    .venv/bin/python -m bench.pg_bytes --size 256MiB --variants insert-8MiB,insert-1MiB

One embedded PostgreSQL with the settings `make run` gives it (fsync on, synchronous_commit on); every
row commits on its own, as a chunk PUT does; the read is chunkd's assembly read (4 MiB substring
slices); a CHECKPOINT ends each variant so the heap writes it caused are paid by it. CPU-seconds come
from /proc for the postmaster and all its children (backends, WAL writer, checkpointer), so they are
load-independent up to cache effects; the wall seconds are not. The reference in the same run is
`insert-8MiB` + `delete`, what chunkd does today."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from bench.compare import GiB, MiB, cpu_seconds
from bench.timing import bench_database
from service import embedded
from service.config import _bytes

SLICE = 4 * MiB
TABLE = "CREATE TABLE {name} (LIKE file_chunks INCLUDING ALL)"


async def store_insert(conn: asyncpg.Connection, table: str, file_id: str, data: bytes, row: int) -> None:
    view = memoryview(data)
    for index, offset in enumerate(range(0, len(data), row)):
        await conn.execute(
            f"INSERT INTO {table} (file_id, chunk_index, data) VALUES ($1, $2, $3)",
            file_id,
            index,
            view[offset : offset + row],
        )


async def store_copy(conn: asyncpg.Connection, table: str, file_id: str, data: bytes, row: int) -> None:
    for index, offset in enumerate(range(0, len(data), row)):
        await conn.copy_records_to_table(
            table, records=[(file_id, index, data[offset : offset + row])], columns=["file_id", "chunk_index", "data"]
        )


async def read_back(conn: asyncpg.Connection, table: str, file_id: str) -> int:
    total = 0
    rows = await conn.fetch(f"SELECT chunk_index, length(data) FROM {table} WHERE file_id = $1 ORDER BY 1", file_id)
    for index, length in rows:
        for offset in range(0, length, SLICE):
            piece = await conn.fetchval(
                f"SELECT substring(data FROM $3 FOR $4) FROM {table} WHERE file_id = $1 AND chunk_index = $2",
                file_id,
                index,
                offset + 1,
                min(SLICE, length - offset),
            )
            total += len(piece)
    return total


class Meter:
    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    async def phase(self, work: Awaitable[object]) -> tuple[float, float]:
        cpu, wall = cpu_seconds(self.postmaster, children=True), time.monotonic()
        await work
        return cpu_seconds(self.postmaster, children=True) - cpu, time.monotonic() - wall


Store = Callable[[asyncpg.Connection, str, str, bytes, int], Awaitable[None]]
VARIANTS: dict[str, tuple[Store, int, str]] = {
    # name: (how rows are stored, row size, how a finished file's rows go)
    "insert-8MiB": (store_insert, 8 * MiB, "delete"),
    "insert-1MiB": (store_insert, 1 * MiB, "delete"),
    "insert-256KiB": (store_insert, 256 * 1024, "delete"),
    "insert-32MiB": (store_insert, 32 * MiB, "delete"),
    "copy-8MiB": (store_copy, 8 * MiB, "delete"),
    "insert-8MiB-drop": (store_insert, 8 * MiB, "drop"),
}


async def variant(conn: asyncpg.Connection, meter: Meter, name: str, data: bytes, run: int) -> dict[str, float]:
    how, row, removal = VARIANTS[name]
    table = f"t_{name.replace('-', '_').lower()}_{run + 1}"
    await conn.execute(TABLE.format(name=table))
    await conn.execute("CHECKPOINT")
    file_id = os.urandom(8).hex()
    store = await meter.phase(how(conn, table, file_id, data, row))
    read = await meter.phase(read_back(conn, table, file_id))
    if removal == "delete":
        delete = await meter.phase(conn.execute(f"DELETE FROM {table} WHERE file_id = $1", file_id))
    else:
        delete = await meter.phase(conn.execute(f"DROP TABLE {table}"))
    checkpoint = await meter.phase(conn.execute("CHECKPOINT"))
    if removal == "delete":
        await conn.execute(f"DROP TABLE {table}")
    gib = len(data) / GiB
    return {
        "store": store[0] / gib,
        "read": read[0] / gib,
        "delete": delete[0] / gib,
        "checkpoint": checkpoint[0] / gib,
        "total": (store[0] + read[0] + delete[0] + checkpoint[0]) / gib,
        "store_s": store[1],
        "read_s": read[1],
        "delete_s": delete[1],
    }


async def run(args: argparse.Namespace) -> None:
    size = _bytes(1)(args.size)
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    data = os.urandom(size)
    print(f"load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; {size / MiB:.0f} MiB per variant")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    async with bench_database(**embedded.tuned_options()) as (url, _):
        conn = await asyncpg.connect(url)
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
        meter = Meter(postmaster)
        # Unmeasured: a fresh cluster creates (zero-fills) its WAL segments; one that has run recycles them.
        await variant(conn, meter, names[0], data, -1)
        for r in range(args.runs):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                result = await variant(conn, meter, name, data, r)
                results[name].append(result)
                print(
                    f"  run {r + 1} {name:18} " + " ".join(f"{k} {v:.2f}" for k, v in result.items()),
                    flush=True,
                )
        await conn.close()
    print(
        f"\nPostgreSQL CPU-s per GiB, median [min..max] over {args.runs} runs; load at the end {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'variant':18} {'store':>16} {'read':>16} {'delete':>16} {'checkpoint':>16} {'total':>16} {'/ reference':>11}"
    )
    ref = statistics.median(r["total"] for r in results.get("insert-8MiB", [])) if results.get("insert-8MiB") else None

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} [{min(values):.2f}..{max(values):.2f}]"

    for name, runs in results.items():
        total = statistics.median(r["total"] for r in runs)
        print(
            f"{name:18} "
            + " ".join(f"{fmt([r[k] for r in runs]):>16}" for k in ("store", "read", "delete", "checkpoint", "total"))
            + (f" {total / ref:11.2f}" if ref else "")
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1GiB")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--variants", help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
