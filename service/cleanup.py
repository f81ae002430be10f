"""The cleanup pass: old FAILED files, expired unfinished uploads, orphaned chunks, and blobs under
STORAGE_DIR that no row points to. `chunkd cleanup` runs it once; the worker every CLEANUP_INTERVAL."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from service import db
from service.config import Settings
from service.store import cleanup as store

log = logging.getLogger(__name__)

FAILED_FILE_DAYS = 90       # the seed's cleanupOldFiles
BLOB_GRACE = 3600           # seconds: a blob this new may belong to a row not yet visible or an assembly in flight
TEMP_GRACE = 86400          # seconds: a temporary file ('.name' or 'name.tmp') this old was left by a crash
LOOKUP_BATCH = 1000         # blob names per database lookup
BLOB_AREAS = ("files", "thumbs")


@dataclass(frozen=True)
class RemovedFile:
    id: str
    filename: str
    reason: str


@dataclass
class CleanupReport:
    dry_run: bool
    skipped: bool = False  # another process was running a pass
    files: list[RemovedFile] = field(default_factory=list)
    orphan_chunks: int = 0
    account_rows: int = 0  # expired sessions, old failed logins, settled webhook deliveries
    blobs: list[str] = field(default_factory=list)  # relative to STORAGE_DIR

    def lines(self) -> list[str]:
        if self.skipped:
            return ["another cleanup pass is running; nothing done"]
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{verb} file {f.id} ({f.reason})" for f in self.files]
        lines += [f"{verb} {self.orphan_chunks} chunks whose file is gone"] if self.orphan_chunks else []
        lines += [f"{verb} {self.account_rows} expired sessions, old failed logins and settled webhook deliveries"] \
            if self.account_rows else []
        lines += [f"{verb} blob {b}" for b in self.blobs]
        lines.append(f"{verb}: {len(self.files)} files, {self.orphan_chunks} orphaned chunks, {len(self.blobs)} blobs")
        return lines


async def run_cleanup(pool_or_conn: asyncpg.Pool | asyncpg.Connection, settings: Settings,
                      dry_run: bool = False, *, log_summary: bool = True) -> CleanupReport:
    """One pass. log_summary=False when the caller shows the report itself (`chunkd cleanup` prints it)."""
    async with _connection(pool_or_conn) as conn:
        db.keeps_session_state(conn)
        if not await store.try_lock(conn):
            return CleanupReport(dry_run, skipped=True)
        try:
            report = await _run(conn, settings.storage_path, dry_run)
        finally:
            await store.unlock(conn)
    if log_summary:
        log.info("cleanup: %s", report.lines()[-1], extra={"action": "cleanup", "dry_run": dry_run,
                                                            "files": len(report.files), "blobs": len(report.blobs)})
    return report


async def _run(conn: asyncpg.Connection, storage_dir: Path, dry_run: bool) -> CleanupReport:
    """Rows are deleted first; blobs are then looked up in the same transaction, so the blobs of the rows
    just deleted count as orphans too (and a dry run, rolled back, reports exactly what a real run removes).
    Files are unlinked only after the commit: a crash in between leaves orphans the next pass removes."""
    report = CleanupReport(dry_run)
    transaction = conn.transaction()
    await transaction.start()
    try:
        failed = await store.delete_old_failed_files(conn, FAILED_FILE_DAYS)
        expired = await store.delete_expired_uploads(conn)
        report.orphan_chunks = await store.delete_orphan_chunks(conn)
        report.account_rows = await store.delete_stale_account_rows(conn)
        garbage = await _orphan_blobs(conn, storage_dir)
    except BaseException:
        await transaction.rollback()
        raise
    await (transaction.rollback() if dry_run else transaction.commit())
    report.files = ([RemovedFile(f.id, f.filename, f"FAILED more than {FAILED_FILE_DAYS} days ago") for f in failed] +
                    [RemovedFile(f.id, f.filename, "unfinished upload past expires_at") for f in expired])
    report.blobs = await asyncio.to_thread(_unlink_all, storage_dir, garbage, dry_run)
    return report


async def _orphan_blobs(conn: asyncpg.Connection, storage_dir: Path) -> list[Path]:
    garbage, candidates = await asyncio.to_thread(_scan_storage, storage_dir, time.time())
    for start in range(0, len(candidates), LOOKUP_BATCH):
        batch = candidates[start:start + LOOKUP_BATCH]
        known = await store.list_known_filenames(conn, sorted({name for name, _ in batch}))
        garbage += [path for name, path in batch if name not in known]
    return sorted(garbage)


def _scan_storage(storage_dir: Path, now: float) -> tuple[list[Path], list[tuple[str, Path]]]:
    """Stale temporary files (garbage outright), and (blob name, path) of settled blobs to look up."""
    garbage: list[Path] = []
    candidates: list[tuple[str, Path]] = []
    for area in BLOB_AREAS:
        for directory, _, names in os.walk(storage_dir / area):
            for name in names:
                path = Path(directory, name)
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode):
                    continue
                age = now - info.st_mtime
                if name.startswith(".") or name.endswith(".tmp"):
                    if age > TEMP_GRACE:
                        garbage.append(path)
                elif age > BLOB_GRACE:
                    # files/ab/<filename>; thumbs/ab/<filename>.webp
                    candidates.append((name if area == "files" else name.partition(".")[0], path))
    return garbage, candidates


def _unlink_all(storage_dir: Path, paths: list[Path], dry_run: bool) -> list[str]:
    root = storage_dir.resolve()
    return [str(p.resolve().relative_to(root)) for p in paths if _unlink(p, dry_run)]


def _unlink(path: Path, dry_run: bool) -> bool:
    if dry_run:
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False  # removed by someone else meanwhile
    return True


@contextlib.asynccontextmanager
async def _connection(pool_or_conn: asyncpg.Pool | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(pool_or_conn, asyncpg.Pool):
        async with pool_or_conn.acquire() as conn:
            yield conn
    else:
        yield pool_or_conn
