"""Where an embedded PostgreSQL's CPU goes over one measured stretch: per kind of process (backends,
autovacuum workers, WAL writer, checkpointer, background writer) and PostgreSQL's own counters
(pg_stat_wal, pg_stat_bgwriter, file_chunks and its TOAST table in pg_stat_all_tables, their sizes).

bench/compare.py prints one such line per chunkd upload, so a cost that grows with every GiB a
server has taken shows what grows with it."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import asyncpg

TICK = os.sysconf("SC_CLK_TCK")
KINDS = (
    ("autovacuum worker", "autovacuum"),
    ("autovacuum launcher", "launcher"),
    ("walwriter", "walwriter"),
    ("checkpointer", "checkpointer"),
    ("background writer", "bgwriter"),
    ("[local]", "backend"),
)


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, own CPU-seconds) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _kind(pid: int) -> str:
    with contextlib.suppress(OSError):
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        for needle, kind in KINDS:
            if needle in title:
                return kind
    return "other"


class ProcessCpu:
    """Samples the postmaster's children every `interval` s in a thread: a process that exits between
    two samples (an autovacuum worker finishing a table) keeps the CPU it had when last seen, so a kind's
    figure misses at most one interval of each exited process; the remainder shows as `unseen`."""

    def __init__(self, postmaster: int, interval: float = 0.2) -> None:
        self.postmaster = postmaster
        self.interval = interval
        self.seen: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcessCpu:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        found: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            stat = _stat(pid)
            if stat is None or stat[0] != self.postmaster:
                continue
            # A process just forked still has the postmaster's title: known only once it sets its own.
            kind = self.seen[pid][0] if pid in self.seen and self.seen[pid][0] != "other" else _kind(pid)
            found[pid] = (kind, stat[1])
        with self._lock:
            self.seen.update(found)

    def snapshot(self) -> dict[int, tuple[str, float]]:
        self.sample()
        with self._lock:
            return dict(self.seen)


def cpu_by_kind(after: dict[int, tuple[str, float]], before: dict[int, tuple[str, float]]) -> dict[str, float]:
    kinds: dict[str, float] = {}
    for pid, (kind, cpu) in after.items():
        kinds[kind] = kinds.get(kind, 0.0) + cpu - (before[pid][1] if pid in before else 0.0)
    return kinds


# file_chunks as one table or as partitions (sql/0217): its leaves, summed.
COUNTERS = """
WITH leaves AS (SELECT c.oid, c.reltoastrelid FROM pg_partition_tree('file_chunks') p
                  JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf),
     toast AS (SELECT sum(t.n_dead_tup) AS dead, sum(t.n_live_tup) AS live, sum(t.autovacuum_count) AS vacuums,
                      sum(t.n_tup_del) AS deleted, sum(t.idx_tup_fetch) AS fetched, sum(pg_relation_size(l.reltoastrelid))::float8 AS bytes,
                      sum((SELECT sum(pg_relation_size(i.indexrelid)) FROM pg_index i
                            WHERE i.indrelid = l.reltoastrelid))::float8 AS index_bytes
                 FROM leaves l JOIN pg_stat_all_tables t ON t.relid = l.reltoastrelid),
     heap AS (SELECT sum(h.n_dead_tup) AS dead, sum(h.autovacuum_count) AS vacuums
                FROM leaves l JOIN pg_stat_all_tables h ON h.relid = l.oid)
SELECT w.wal_records, w.wal_fpi, w.wal_bytes::float8, w.wal_buffers_full, w.wal_write, w.wal_sync,
       b.checkpoints_timed + b.checkpoints_req AS checkpoints, b.buffers_checkpoint, b.buffers_clean,
       b.buffers_backend, b.buffers_backend_fsync, b.buffers_alloc,
       (SELECT count(*) FROM pg_ls_waldir()) AS wal_segments,
       toast.dead AS toast_dead, toast.live AS toast_live, toast.vacuums AS toast_vacuums,
       toast.deleted AS toast_deleted, toast.fetched AS toast_fetched, toast.bytes AS toast_bytes, toast.index_bytes AS toast_index_bytes,
       heap.dead AS heap_dead, heap.vacuums AS heap_vacuums,
       (SELECT count(*) FROM pg_stat_progress_vacuum) AS vacuums_running
  FROM pg_stat_wal w, pg_stat_bgwriter b, toast, heap
"""


async def counters(pool: asyncpg.Pool) -> dict[str, float]:
    row = await pool.fetchrow(COUNTERS)
    return {k: float(v) for k, v in row.items()}


# Counters that are totals (reported as the stretch's increase); the others are levels at its end.
TOTALS = (
    "wal_records",
    "wal_fpi",
    "wal_bytes",
    "wal_buffers_full",
    "wal_write",
    "wal_sync",
    "checkpoints",
    "buffers_checkpoint",
    "buffers_clean",
    "buffers_backend",
    "buffers_backend_fsync",
    "buffers_alloc",
    "toast_vacuums",
    "toast_deleted",
    "toast_fetched",
    "heap_vacuums",
)


@dataclass
class Stretch:
    cpu: dict[str, float]  # CPU-seconds per kind of PostgreSQL process
    counters: dict[str, float]  # TOTALS as increases, the rest as levels at the end

    def line(self, gib: float) -> str:
        c = self.counters
        kinds = " ".join(f"{k} {v / gib:.1f}" for k, v in sorted(self.cpu.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        return (
            f"      postgres CPU-s/GiB: {kinds}"
            f"\n      WAL {c['wal_bytes'] / 2**30 / gib:.2f} GiB/GiB, {c['wal_fpi']:.0f} FPI, "
            f"buffers_full {c['wal_buffers_full']:.0f}, segments {c['wal_segments']:.0f}; "
            f"checkpoints {c['checkpoints']:.0f}; buffers written by backends {c['buffers_backend']:.0f}, "
            f"bgwriter {c['buffers_clean']:.0f}, checkpointer {c['buffers_checkpoint']:.0f}, "
            f"alloc {c['buffers_alloc']:.0f}"
            f"\n      TOAST {c['toast_bytes'] / 2**20:.0f} MiB + index {c['toast_index_bytes'] / 2**20:.0f} MiB, "
            f"live {c['toast_live']:.0f} dead {c['toast_dead']:.0f}, {c['toast_fetched'] / gib:.0f} read back per GiB, "
            f"+{c['toast_vacuums']:.0f} autovacuums "
            f"(heap +{c['heap_vacuums']:.0f}), {c['vacuums_running']:.0f} running at the end"
        )


def stretch(
    cpu_after: dict[int, tuple[str, float]],
    cpu_before: dict[int, tuple[str, float]],
    after: dict[str, float],
    before: dict[str, float],
    total_cpu: float,
) -> Stretch:
    kinds = cpu_by_kind(cpu_after, cpu_before)
    kinds["unseen"] = total_cpu - sum(kinds.values())  # the postmaster, and processes gone between samples
    return Stretch(kinds, {k: after[k] - before[k] if k in TOTALS else after[k] for k in after})
