"""The cleanup pass: old FAILED files, expired unfinished uploads, orphaned chunks, objects in the store that
no row points to, and writes a killed worker never finished. `chunkd cleanup` runs it once; the worker every CLEANUP_INTERVAL."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from service import db, storage
from service.config import Settings
from service.storage import AREAS, BlobStore, Unfinished, owner_of
from service.store import cleanup as store

log = logging.getLogger(__name__)

FAILED_FILE_DAYS = 90  # the seed's cleanupOldFiles
BLOB_GRACE = 3600  # seconds: a blob this new may belong to a row not yet visible or an assembly in flight
TEMP_GRACE = 86400  # seconds: an unfinished write (temporary file, multipart upload) this old was left by a crash
LOOKUP_BATCH = 1000  # blob names per database lookup


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
    blobs: list[str] = field(default_factory=list)  # keys (and labels of unfinished writes)

    def lines(self) -> list[str]:
        if self.skipped:
            return ["another cleanup pass is running; nothing done"]
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{verb} file {f.id} ({f.reason})" for f in self.files]
        lines += [f"{verb} {self.orphan_chunks} chunks whose file is gone"] if self.orphan_chunks else []
        lines += (
            [f"{verb} {self.account_rows} expired sessions, old failed logins and settled webhook deliveries"]
            if self.account_rows
            else []
        )
        lines += [f"{verb} blob {b}" for b in self.blobs]
        lines.append(f"{verb}: {len(self.files)} files, {self.orphan_chunks} orphaned chunks, {len(self.blobs)} blobs")
        return lines


async def run_cleanup(
    pool_or_conn: asyncpg.Pool | asyncpg.Connection,
    settings: Settings,
    blobs: BlobStore | None = None,
    dry_run: bool = False,
    now: float | None = None,
    *,
    log_summary: bool = True,
) -> CleanupReport:
    """One pass. blobs: the store to clean (the worker's); None opens the configured one for this pass. now:
    the time ages are judged at (objects in a bucket cannot be made older: a test passes a later time instead).
    log_summary=False when the caller shows the report itself (`chunkd cleanup` prints it)."""
    own = blobs is None
    blobs = blobs if blobs is not None else storage.from_settings(settings)
    try:
        async with _connection(pool_or_conn) as conn:
            db.keeps_session_state(conn)
            if not await store.try_lock(conn):
                return CleanupReport(dry_run, skipped=True)
            try:
                report = await _run(conn, blobs, dry_run, time.time() if now is None else now)
            finally:
                await store.unlock(conn)
    finally:
        if own:
            await blobs.close()
    if log_summary:
        log.info(
            "cleanup: %s",
            report.lines()[-1],
            extra={"action": "cleanup", "dry_run": dry_run, "files": len(report.files), "blobs": len(report.blobs)},
        )
    return report


async def _run(conn: asyncpg.Connection, blobs: BlobStore, dry_run: bool, now: float) -> CleanupReport:
    """Rows are deleted first; blobs are then looked up in the same transaction, so the blobs of the rows
    just deleted count as orphans too (and a dry run, rolled back, reports exactly what a real run removes).
    Objects are deleted only after the commit: a crash in between leaves orphans the next pass removes."""
    report = CleanupReport(dry_run)
    transaction = conn.transaction()
    await transaction.start()
    try:
        failed = await store.delete_old_failed_files(conn, FAILED_FILE_DAYS)
        expired = await store.delete_expired_uploads(conn)
        report.orphan_chunks = await store.delete_orphan_chunks(conn)
        report.account_rows = await store.delete_stale_account_rows(conn)
        orphans, stale = await _garbage(conn, blobs, now)
    except BaseException:
        await transaction.rollback()
        raise
    await (transaction.rollback() if dry_run else transaction.commit())
    report.files = [RemovedFile(f.id, f.filename, f"FAILED more than {FAILED_FILE_DAYS} days ago") for f in failed] + [
        RemovedFile(f.id, f.filename, "unfinished upload past expires_at") for f in expired
    ]
    for key in orphans:
        if not dry_run:
            await blobs.delete(key)
        report.blobs.append(key)
    for write in stale:
        if not dry_run:
            await blobs.abort(write)
        report.blobs.append(write.label)
    return report


async def _garbage(conn: asyncpg.Connection, blobs: BlobStore, now: float) -> tuple[list[str], list[Unfinished]]:
    """Settled objects that no row names, and writes started long ago and never finished (killed workers'
    multipart uploads, temporary files). Young ones are left alone: an assembly may be in flight."""
    candidates: list[tuple[str, str]] = []
    stale: list[Unfinished] = []
    for area in AREAS:
        async for info in blobs.objects(area + "/"):
            name = owner_of(info.key)
            if name is not None and now - info.modified > BLOB_GRACE:
                candidates.append((name, info.key))
        stale += [w for w in await blobs.unfinished(area + "/") if now - w.started > TEMP_GRACE]
    orphans = []
    for start in range(0, len(candidates), LOOKUP_BATCH):
        batch = candidates[start : start + LOOKUP_BATCH]
        known = await store.list_known_filenames(conn, sorted({name for name, _ in batch}))
        orphans += [key for name, key in batch if name not in known]
    return sorted(orphans), sorted(stale, key=lambda w: w.label)


@contextlib.asynccontextmanager
async def _connection(pool_or_conn: asyncpg.Pool | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(pool_or_conn, asyncpg.Pool):
        async with pool_or_conn.acquire() as conn:
            yield conn
    else:
        yield pool_or_conn
