"""`chunkd backup` and `chunkd restore`: one tar holding a pg_dump (custom format) and the objects of the
blob store (a directory or a bucket) the dumped rows point to.

Consistency: a REPEATABLE READ transaction exports its snapshot, pg_dump --snapshot dumps exactly that
snapshot, and the list of referenced blob names is read in the same transaction. Objects never change once
written, so copying them afterwards is safe; a file created after the snapshot is neither in the dump nor
in the archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from service import __version__, db, storage
from service.config import Settings
from service.embedded import EmbeddedError, find_bin_dir
from service.progress import Progress
from service.storage import AREAS, BlobNotFound, BlobStore, keys_of, owner_of
from service.store import backup as store
from service.store import server

ARCHIVE_PATTERN = re.compile(r"^chunkd-backup-(\d{8}T\d{6}Z)\.tar$")
TIMESTAMP = "%Y%m%dT%H%M%SZ"
RETENTION = timedelta(days=7)  # the seed's backup script keeps 7 days
MANIFEST, DUMP, BLOBS = "manifest.json", "database.dump", "storage/"
FORMAT = "chunkd-backup/1"
COPY_BUFFER = 1024 * 1024


class BackupError(Exception):
    """The backup or restore cannot go on; the message is one line saying why."""


@dataclass(frozen=True)
class Blob:
    key: str  # files/ab/<name>, thumbs/ab/<name>.webp
    size: int


# --- backup ---------------------------------------------------------------------------------------


async def backup(settings: Settings, directory: Path, now: datetime | None = None) -> tuple[Path, list[Path]]:
    """Write the archive; return its path and the expired archives removed."""
    now = now or datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"chunkd-backup-{now.strftime(TIMESTAMP)}.tar"
    final, partial = directory / name, directory / f".{name}.partial"
    store = storage.from_settings(settings)
    try:
        with tempfile.TemporaryDirectory(prefix=".chunkd-dump-", dir=directory) as scratch:
            dump = Path(scratch) / DUMP
            referenced, server_version = await _dump(settings, dump)
            blobs = await _referenced_blobs(store, referenced)
            manifest = {
                "format": FORMAT,
                "chunkd": __version__,
                "created_at": now.isoformat(),
                "server_version": server_version,
                "files": len(referenced),
                "blobs": len(blobs),
                "blob_bytes": sum(b.size for b in blobs),
                "store": store.description,
            }
            try:
                reader = _BlobReader(store, asyncio.get_running_loop())
                await asyncio.to_thread(_write_archive, partial, manifest, dump, reader, blobs)
                os.replace(partial, final)  # an archive under its final name is always complete
            finally:
                partial.unlink(missing_ok=True)
    finally:
        await store.close()
    return final, await asyncio.to_thread(prune, directory, now)


async def _dump(settings: Settings, target: Path) -> tuple[set[str], str]:
    conn = await db.connect(settings)
    try:
        server_version, major = await server.get_server_version(conn)
        pg_dump = find_client("pg_dump", major)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await store.export_snapshot(conn)
            referenced = await store.list_referenced_filenames(conn)
            dbname, env = libpq_target(settings.database_url)
            await _run_with_progress(
                [
                    str(pg_dump),
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={target}",
                    f"--dbname={dbname}",
                ],
                env,
                Progress("dumping database", 0),
                lambda: target.stat().st_size if target.exists() else 0,
            )
    finally:
        await conn.close()
    return referenced, server_version


async def _referenced_blobs(store: BlobStore, referenced: set[str]) -> list[Blob]:
    """The objects whose name a dumped row holds; unfinished writes and orphans stay out."""
    blobs = []
    for area in AREAS:
        async for info in store.objects(area + "/"):
            if owner_of(info.key) in referenced:
                blobs.append(Blob(info.key, info.size))
    return sorted(blobs, key=lambda b: b.key)


class _BlobReader:
    """Opens objects of an async store for tarfile, which runs in a thread: each read waits on the loop."""

    def __init__(self, store: BlobStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store, self.loop = store, loop

    def open(self, key: str) -> _BlobFile:
        pieces = asyncio.run_coroutine_threadsafe(self.store.get(key), self.loop).result()
        return _BlobFile(pieces, self.loop)


class _BlobFile:
    def __init__(self, pieces, loop: asyncio.AbstractEventLoop) -> None:  # type: ignore[no-untyped-def]
        self.pieces, self.loop = pieces, loop
        self.piece, self.pos = b"", 0

    def read(self, n: int = -1) -> bytes:
        """Exactly n bytes unless the object ends first (tarfile counts on it)."""
        out, want = [], n
        while want != 0:
            if self.pos >= len(self.piece):
                self.piece = asyncio.run_coroutine_threadsafe(anext(self.pieces, b""), self.loop).result()
                self.pos = 0
                if not self.piece:
                    break
            take = len(self.piece) - self.pos if want < 0 else min(want, len(self.piece) - self.pos)
            out.append(self.piece[self.pos : self.pos + take])
            self.pos += take
            want = want - take if want > 0 else want
        return b"".join(out)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.pieces.aclose(), self.loop).result()


def _write_archive(path: Path, manifest: dict[str, Any], dump: Path, reader: _BlobReader, blobs: list[Blob]) -> None:
    progress = Progress("writing archive", dump.stat().st_size + sum(b.size for b in blobs))
    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        body = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(body), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(body))
        with open(dump, "rb") as f:  # open first: the size and bytes archived are those of one file
            info = tar.gettarinfo(fileobj=f, arcname=DUMP)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, _Counting(f, progress))
        for blob in blobs:
            try:
                source = reader.open(blob.key)
            except BlobNotFound:  # deleted since the snapshot: its row is in the dump, the bytes are gone
                print(f"warning: {blob.key} vanished during the backup", file=sys.stderr, flush=True)
                continue
            try:
                info = tarfile.TarInfo(BLOBS + blob.key)
                info.size, info.mtime, info.mode = blob.size, int(time.time()), 0o644
                tar.addfile(info, _Counting(source, progress))
            finally:
                source.close()
        tar.close()
        raw.flush()
        os.fsync(raw.fileno())
    progress.finish()


class _Counting:
    """A file whose reads advance a progress display (tarfile.addfile only calls read)."""

    def __init__(self, f: io.BufferedReader | _BlobFile, progress: Progress) -> None:
        self.f, self.progress = f, progress

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.progress.advance(len(data))
        return data


def prune(directory: Path, now: datetime) -> list[Path]:
    """Remove chunkd archives older than RETENTION, judged by the time in their name."""
    removed = []
    for path in sorted(directory.iterdir()):
        match = ARCHIVE_PATTERN.match(path.name)
        if not match:
            continue
        taken = datetime.strptime(match.group(1), TIMESTAMP).replace(tzinfo=UTC)
        if now - taken > RETENTION:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# --- restore --------------------------------------------------------------------------------------


async def restore(settings: Settings, archive: Path, force: bool = False) -> dict[str, Any]:
    """Check both targets, then restore the database, then the blobs. Returns the archive's manifest."""
    manifest = await asyncio.to_thread(_read_manifest, archive)
    await _check_database(settings, force)
    store = storage.from_settings(settings)
    try:
        await _check_storage(store, force)
        with tempfile.TemporaryDirectory(prefix="chunkd-restore-") as scratch:
            dump = Path(scratch) / DUMP
            await asyncio.to_thread(_extract_dump, archive, dump)
            await _restore_database(settings, dump, force)
        await _restore_blobs(archive, store, force)
    finally:
        await store.close()
    return manifest


def _read_manifest(archive: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive, mode="r:") as tar:
            f = tar.extractfile(MANIFEST)
            manifest = json.load(f) if f else None
            tar.getmember(DUMP)
    except (KeyError, ValueError, tarfile.TarError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive} is not a chunkd backup archive")
    return manifest


def _extract_dump(archive: Path, target: Path) -> None:
    with tarfile.open(archive, mode="r:") as tar:
        member = tar.getmember(DUMP)
        _extract(tar, member, target, Progress("reading dump", member.size))


async def _check_database(settings: Settings, force: bool) -> None:
    conn = await db.connect(settings)
    try:
        relations = await store.list_user_relations(conn)
    finally:
        await conn.close()
    if relations and not force:
        shown = ", ".join(relations[:5]) + (", ..." if len(relations) > 5 else "")
        raise BackupError(
            f"the database is not empty ({len(relations)} relations: {shown}); "
            "restore --force replaces everything in it"
        )


async def _check_storage(store: BlobStore, force: bool) -> None:
    present = [area for area in AREAS if await anext(aiter(store.objects(area + "/")), None) is not None]
    if present and not force:
        raise BackupError(
            f"{store.description} already holds blobs ({', '.join(present)}); restore --force replaces them"
        )


async def _restore_database(settings: Settings, dump: Path, force: bool) -> None:
    conn = await db.connect(settings)
    try:
        pg_restore = find_client("pg_restore", (await server.get_server_version(conn))[1])
        if force:
            await store.drop_public_schema(conn)
    finally:
        await conn.close()
    listing = await asyncio.to_thread(
        subprocess.run, [str(pg_restore), "--list", str(dump)], capture_output=True, text=True
    )
    entries = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
    dbname, env = libpq_target(settings.database_url)
    progress = Progress("restoring database", entries, unit_bytes=False)
    # One transaction: a failed restore leaves the database as it was (empty).
    await _run_with_progress(
        [
            str(pg_restore),
            "--verbose",
            "--exit-on-error",
            "--single-transaction",
            "--no-owner",
            "--no-privileges",
            f"--dbname={dbname}",
            str(dump),
        ],
        env,
        progress,
        verbose_lines=True,
    )


async def _restore_blobs(archive: Path, store: BlobStore, force: bool) -> None:
    if force:
        for area in AREAS:
            async for info in store.objects(area + "/"):
                await store.delete(info.key)
            for write in await store.unfinished(area + "/"):
                await store.abort(write)
    with tarfile.open(archive, mode="r:") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(BLOBS)]
        progress = Progress("restoring blobs", sum(m.size for m in members))
        for member in members:
            key = member.name[len(BLOBS) :]
            name = owner_of(key)
            if not member.isfile() or name is None or key not in _keys(name):
                raise BackupError(f"unexpected archive member {member.name!r}")
            source = tar.extractfile(member)
            assert source is not None
            writer = await store.writer(key, member.size)  # visible only once complete: no half blob
            try:
                while data := await asyncio.to_thread(source.read, COPY_BUFFER):
                    await writer.write(data)
                    progress.advance(len(data))
                await writer.commit()
            except BaseException:
                await writer.abort()
                raise
    progress.finish()


def _keys(name: str) -> list[str]:
    try:
        return keys_of(name)
    except ValueError:
        return []


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, progress: Progress) -> None:
    """Copy one member under a temporary name, then rename: a killed restore leaves no half blob."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".restore-{target.name}")
    source = tar.extractfile(member)
    assert source is not None
    with source, open(tmp, "wb") as out:
        while data := source.read(COPY_BUFFER):
            out.write(data)
            progress.advance(len(data))
    os.replace(tmp, target)


# --- PostgreSQL client tools ----------------------------------------------------------------------


def find_client(name: str, server_major: int) -> Path:
    """pg_dump / pg_restore of the server's major version or newer: PATH, then /usr/lib/postgresql/*/bin,
    then the embedded server's binaries (the pgserver wheel)."""
    candidates = [shutil.which(name)] + sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    with contextlib.suppress(EmbeddedError):
        candidates.append(str(find_bin_dir() / name))
    found = []
    for candidate in filter(None, candidates):
        major = _client_major(candidate)
        if major is not None:
            found.append(f"{candidate} ({major})")
            if major >= server_major:
                return Path(candidate)
    raise BackupError(
        f"no {name} of PostgreSQL {server_major} or newer found "
        f"(found: {', '.join(found) or 'none'}); install the PostgreSQL client tools"
    )


def _client_major(path: str) -> int | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(match.group(1)) if match else None


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The URL for --dbname with its password moved to PGPASSWORD (never on a command line)."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}@" if parts.username else ""
        parts = parts._replace(netloc=user + host)
    return urlunsplit(parts), env


async def _run_with_progress(
    command: list[str],
    env: dict[str, str],
    progress: Progress,
    measure: Callable[[], int] | None = None,
    verbose_lines: bool = False,
) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    tail: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            tail[:] = (tail + [line])[-5:]
            if verbose_lines and ("creating" in line or "processing data" in line):
                progress.advance(1)

    reader = asyncio.create_task(read_stderr())
    exited = asyncio.create_task(process.wait())
    while not exited.done():
        if measure is not None:
            progress.update(measure())
        await asyncio.wait({exited}, timeout=0.5)
    await reader
    if measure is not None:
        progress.update(measure())
    if process.returncode != 0:
        errors = [line for line in tail if "error" in line.lower()] or tail
        raise BackupError(f"{Path(command[0]).name} failed: {errors[-1] if errors else process.returncode}")
    progress.finish()
