"""The processing worker: claims PROCESSING files, assembles, analyses and finishes them.

Any number of workers share one database. A file is claimed with one UPDATE ... FOR UPDATE SKIP LOCKED,
so two workers never take the same one; NOTIFY files_ready wakes idle workers, polling is the safety
net. A claim is a lease: files.worker_id points at the worker's row in `workers`, kept alive by
heartbeats; a worker silent for WORKER_LEASE is deleted by the others, which puts its files back
in the queue (ON DELETE SET NULL). Every state change is guarded by `worker_id = me` in SQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from service import cleanup, db, storage, webhooks
from service.assembly import assemble
from service.config import Settings
from service.keys import pool_key, settings_key, storage_key, worker_key
from service.media.pool import DecoderPool
from service.media.result import Analysis
from service.metrics import PROCESSING_SECONDS, UPLOADS_COMPLETED, UPLOADS_FAILED
from service.models import File
from service.processing import CorruptContent
from service.storage import BlobStore, StorageUnavailable
from service.storage.assembly import Assembly, remove_stale_copies
from service.store import workers as store
from service.store.files import FILES_READY
from service.streaming import Prefix, Streamer

log = logging.getLogger("service.worker")

MAX_ATTEMPTS = 5  # claims of one file; then FAILED, so a file that kills workers cannot loop forever
MAX_RETRY_DELAY = 300  # seconds; transient failures back off 2, 4, 8 ... up to this
SETTLE_MAX_DELAY = 2.0  # seconds between tries to record an outcome: the file waits on them, a try is cheap
INTERRUPTED_RETRY_DELAY = 1.0  # seconds before a file whose processing lost the database is taken again
POLL_INTERVAL = 5.0  # seconds between claims when no NOTIFY arrives
SHUTDOWN_TIMEOUT = 30.0  # seconds running files get to finish on stop; the rest go back to the queue
STORAGE_RETRY_DELAY = 5.0  # seconds before a file whose store was unavailable is taken again


class Worker:
    def __init__(
        self,
        settings: Settings,
        pool: db.Pool,
        store: BlobStore | None = None,
        *,
        concurrency: int | None = None,
        poll_interval: float = POLL_INTERVAL,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    ) -> None:
        """store: the app's, or None for one of the worker's own (closed by close())."""
        self.settings, self.pool = settings, pool
        self._own_store = store is None
        self.store = store if store is not None else storage.from_settings(settings)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = settings.worker_lease
        self.poll_interval, self.shutdown_timeout = poll_interval, shutdown_timeout
        self._slots = asyncio.Semaphore(concurrency or settings.worker_concurrency)
        self.decoders = DecoderPool(
            concurrency or settings.worker_concurrency, settings.processing_timeout, settings.processing_memory
        )
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.processing: dict[asyncio.Task[None], str] = {}  # file id of each claim being processed
        self._registered = False
        self.streamer = Streamer(self, settings.streaming_min_size, concurrency or settings.worker_concurrency)
        self.deliveries = webhooks.Deliverer(settings, pool)
        self.listener = db.Listener(
            settings, {FILES_READY: self._on_ready, webhooks.CHANNEL: self.deliveries.wake}, on_connect=self._woken
        )

    def _on_ready(self, file_id: str) -> None:
        self._wake.set()
        self.streamer.ready(file_id)

    async def begin_assembly(self, file: File) -> Assembly:
        """The file's blob opened for writing (what an earlier, killed attempt left of it aborted)."""
        return await Assembly.begin(self.store, storage.blob_key(file.filename), self.settings.work_path, file.size)

    # lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Claims and processes files until stop(); then lets running ones finish and unregisters."""
        if not await self._register_until_stopped():
            return
        background = [
            asyncio.create_task(self.listener.run(), name="worker listener"),
            asyncio.create_task(self._heartbeat_loop(), name="worker heartbeat"),
            asyncio.create_task(self._cleanup_loop(), name="worker cleanup"),
            asyncio.create_task(self.deliveries.run(), name="webhook deliveries"),
        ]
        streamer = asyncio.create_task(self.streamer.run(), name="worker streamer") if self.streamer.enabled else None
        log.info("worker started", extra={"action": "worker_started", "worker_id": self.id})
        with contextlib.suppress(OSError):  # leftovers of a killed worker on this machine
            await asyncio.to_thread(remove_stale_copies, self.settings.work_path, cleanup.TEMP_GRACE)
        try:
            await self._loop()
        finally:
            await self._drain()  # still heartbeating: the files being finished stay ours
            if streamer is not None:  # the streamed files being finished get the same time, also heartbeating
                streamer.cancel()
                await asyncio.gather(streamer, return_exceptions=True)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.close()
            log.info("worker stopped", extra={"action": "worker_stopped", "worker_id": self.id})

    def stop(self) -> None:
        self._stop.set()

    def _woken(self) -> None:
        """(Re)connected to LISTEN: notifications may have been missed, look for work of both kinds."""
        self._wake.set()
        self.deliveries.wake()

    async def run_once(self) -> int:
        """Processes every file ready now and returns how many (procrastinate's wait=False): for tests
        and one-shot runs. Leaves the worker registered; close() unregisters."""
        await self._register()
        claimed = 0
        while True:
            await self._slots.acquire()
            file = await self._claim()
            if file is None:
                self._slots.release()
                break
            self._start(file)
            claimed += 1
        if self._running:
            await asyncio.wait(set(self._running))
        return claimed

    async def close(self) -> None:
        """Unregisters: files still held (a stop that timed out) go back to the queue at once."""
        if self._own_store:
            await self.store.close()
        await self.decoders.close()
        if not self._registered:
            return
        with contextlib.suppress(*db_errors()):
            async with self.pool.acquire() as conn:
                await store.delete_worker(conn, self.id)
        self._registered = False

    async def _register_until_stopped(self) -> bool:
        """The database may not be up yet when the process starts: keep trying, as the pool would."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                await self._register()
                return True
            except db_errors() as e:
                if not db.unavailable(e, self.settings):
                    log.warning("cannot register the worker yet: %s", e, extra={"action": "worker_register_failed"})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 10)
        return False

    async def _register(self) -> None:
        async with self.pool.acquire() as conn:
            await store.register_worker(conn, self.id, socket.gethostname(), os.getpid())
        self._registered = True

    async def _drain(self) -> None:
        if not self._running:
            return
        _, pending = await asyncio.wait(set(self._running), timeout=self.shutdown_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # claiming -------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while await self._free_slot():  # a free slot before claiming: never hold a file we cannot start
            file = None
            try:
                file = await self._claim()
            except db_errors() as e:
                if not db.unavailable(e, self.settings):
                    log.warning("claim failed: %s", e, extra={"action": "claim_failed", "worker_id": self.id})
            if file is None:
                self._slots.release()
                await self._idle()
                continue
            self._start(file)

    async def _free_slot(self) -> bool:
        """Takes a slot; False (holding none) once stop() is called, even while every slot is busy."""
        acquire = asyncio.ensure_future(self._slots.acquire())
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not acquire.done():
            acquire.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquire
        if acquire.cancelled():
            return False
        if self._stop.is_set():
            self._slots.release()
            return False
        return True

    async def _idle(self) -> None:
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._stop.wait())]
        try:
            await asyncio.wait(waits, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self._wake.clear()  # cleared before the next claim, which sees whatever the wake-up announced

    async def _claim(self) -> File | None:
        async with self.pool.acquire() as conn:
            try:
                return await store.claim_next_file(conn, self.id)
            except asyncpg.ForeignKeyViolationError:  # presumed dead by the others: back in the game
                await store.register_worker(conn, self.id, socket.gethostname(), os.getpid())
                return await store.claim_next_file(conn, self.id)

    def _start(self, file: File) -> None:
        task = asyncio.create_task(self._process(file), name=f"process file {file.id}")
        self._running.add(task)
        self.processing[task] = file.id
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.processing.pop(task, None)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:  # a bug: say so, keep working
            log.error("processing task failed", exc_info=task.exception(), extra={"action": "worker_bug"})

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                async with self.pool.acquire() as conn:
                    if not await store.heartbeat(conn, self.id):
                        log.warning(
                            "this worker was presumed dead; registering again",
                            extra={"action": "worker_reregistered", "worker_id": self.id},
                        )
                        await store.register_worker(conn, self.id, socket.gethostname(), os.getpid())
                    dead = await store.delete_stale_workers(conn, self.lease)
                if dead:
                    log.warning(
                        "released the files of dead workers %s",
                        dead,
                        extra={"action": "workers_reaped", "worker_id": self.id},
                    )
                    self._wake.set()
            except db_errors() as e:
                if not db.unavailable(e, self.settings):
                    log.warning("heartbeat failed: %s", e, extra={"action": "heartbeat_failed", "worker_id": self.id})
            await asyncio.sleep(self.lease / 3)

    async def _cleanup_loop(self) -> None:
        """The cleanup pass every CLEANUP_INTERVAL; its advisory lock keeps it to one process at a time."""
        while True:
            await asyncio.sleep(self.settings.cleanup_interval)
            try:
                await cleanup.run_cleanup(self.pool, self.settings, self.store)
            except db_errors() + (OSError, StorageUnavailable) as e:
                if not db.unavailable(e, self.settings):
                    log.warning("cleanup failed: %s", e, extra={"action": "cleanup_failed", "worker_id": self.id})

    # processing -----------------------------------------------------------------------------------
    async def process(self, file: File, prefix: Prefix | None = None) -> None:
        """Processes a file this worker holds: from scratch, or from the prefix the streamer assembled."""
        await self._process(file, prefix)

    async def _process(self, file: File, prefix: Prefix | None = None) -> None:
        started = time.monotonic()
        log.info("file claimed", extra={"action": "file_claimed", "file_id": file.id, "attempt": file.attempts})
        try:
            if file.attempts > MAX_ATTEMPTS:
                raise CorruptContent(f"gave up after {MAX_ATTEMPTS} attempts: the workers processing it stopped")
            digest, analysis = await self._assemble_and_analyse(file, prefix)
            await asyncio.shield(self._settle(lambda: self._finish(file, digest, analysis)))
        except CorruptContent as e:
            # The reason is bound now: a shielded _settle may call its lambda after this block has
            # ended (if we are cancelled meanwhile), when Python has already deleted `e`.
            reason = str(e)
            await asyncio.shield(self._settle(lambda: self._fail(file, reason)))
        except asyncio.CancelledError:
            raise  # stopping: close() hands the file back
        except db.CONNECTION_LOST as e:
            # The database went away under us (a restart, a failover): nothing is wrong with the file,
            # so the attempt does not count towards MAX_ATTEMPTS. _settle returns once the database
            # is back; the file is taken again a moment later (not hot: a client-side asyncpg error
            # that keeps coming back is then a steady trickle of warnings, not a busy loop).
            log.warning(
                "processing file %s interrupted: %r",
                file.id,
                e,
                extra={"action": "file_interrupted", "file_id": file.id, "attempt": file.attempts},
            )
            await asyncio.shield(self._settle(lambda: self._retry(file, INTERRUPTED_RETRY_DELAY, count_attempt=False)))
            asyncio.get_running_loop().call_later(INTERRUPTED_RETRY_DELAY, self._wake.set)
        except StorageUnavailable as e:
            # The store's fault (unreachable, 5xx, throttled, full disk): the chunks stay, the attempt does
            # not count, the file is taken again later, for as long as it lasts.
            log.warning(
                "processing file %s waits for the store: %s",
                file.id,
                e,
                extra={"action": "storage_unavailable", "file_id": file.id, "attempt": file.attempts},
            )
            await asyncio.shield(self._settle(lambda: self._retry(file, STORAGE_RETRY_DELAY, count_attempt=False)))
            asyncio.get_running_loop().call_later(STORAGE_RETRY_DELAY, self._wake.set)
        except Exception as e:
            log.warning(
                "processing file %s failed: %r",
                file.id,
                e,
                extra={"action": "file_error", "file_id": file.id, "attempt": file.attempts},
            )
            if file.attempts >= MAX_ATTEMPTS:
                reason = f"gave up after {file.attempts} attempts: {type(e).__name__}: {e}"
                await asyncio.shield(self._settle(lambda: self._fail(file, reason)))
            else:
                delay = min(2**file.attempts, MAX_RETRY_DELAY)
                await asyncio.shield(self._settle(lambda: self._retry(file, delay)))
        finally:
            PROCESSING_SECONDS.observe(time.monotonic() - started)

    async def _assemble_and_analyse(self, file: File, prefix: Prefix | None) -> tuple[str, Analysis]:
        """The chunks streamed into the store (and a local copy), analysed from the local copy, the
        thumbnail stored, then the blob committed: its key shows only complete, checked bytes."""
        started = time.monotonic()
        try:
            async with self.pool.acquire_bulk() as conn:  # the chunks stream out on it: bulk work
                chunks = await store.list_chunk_lengths(conn, file.id)
                check_chunks(chunks, file.size)
                if prefix is None:
                    assembly = await self.begin_assembly(file)
                else:  # the chunks before prefix.next_index are in it already (and still in the database)
                    assembly, chunks = prefix.assembly, chunks[prefix.next_index :]
                    prefix = None  # the assembly is ours to commit or discard now
                try:
                    digest = await assemble(conn, file.id, chunks, assembly)
                except BaseException:
                    await asyncio.shield(assembly.discard())
                    raise
        finally:
            if prefix is not None:  # failed before taking it over
                await asyncio.shield(prefix.assembly.discard())
        seconds = time.monotonic() - started
        log.info(
            "file assembled: %d bytes in %.3f s",
            file.size,
            seconds,
            extra={"action": "file_assembled", "file_id": file.id, "bytes": file.size, "ms": round(seconds * 1000)},
        )
        try:
            if file.sha256 and digest != file.sha256:
                raise CorruptContent(f"sha256 mismatch: declared {file.sha256}, assembled {digest}")
            analysis = await self.decoders.analyse(assembly.path)  # the child processes read a local file
            if analysis.thumbnail is not None:
                key = storage.thumbnail_key(file.filename, analysis.thumbnail.mimetype)
                writer = await self.store.writer(key, len(analysis.thumbnail.data))
                try:
                    await writer.write(analysis.thumbnail.data)
                    await writer.commit()
                except BaseException:
                    await asyncio.shield(writer.abort())
                    raise
            await assembly.commit()
        except BaseException:
            await asyncio.shield(assembly.discard())
            raise
        return digest, analysis

    async def _finish(self, file: File, digest: str, analysis: Analysis) -> None:
        metadata = {"sha256": digest, "size": file.size, "claimed_mimetype": file.mimetype, **analysis.metadata}
        thumbnail = f"/api/files/{file.id}/thumbnail" if analysis.thumbnail_mimetype else None
        async with self.pool.acquire() as conn:
            if await store.finish_file(
                conn,
                file.id,
                self.id,
                analysis.type,
                analysis.mimetype,
                metadata,
                f"/api/files/{file.id}/content",
                thumbnail,
            ):
                UPLOADS_COMPLETED.inc()
                log.info(
                    "file completed",
                    extra={
                        "action": "file_completed",
                        "file_id": file.id,
                        "type": analysis.type,
                        "mimetype": analysis.mimetype,
                    },
                )
                try:
                    await store.delete_chunks(conn, file.id)
                except db_errors() as e:  # COMPLETED stands; the cleanup pass drops them later
                    log.warning(
                        "dropping the chunks of %s failed: %s",
                        file.id,
                        e,
                        extra={"action": "chunks_left", "file_id": file.id},
                    )
                return
            owned_by_someone = await store.get_file_exists(conn, file.id)
        log.warning(
            "lease on file %s lost before completion", file.id, extra={"action": "lease_lost", "file_id": file.id}
        )
        if not owned_by_someone:  # deleted meanwhile: our blobs are orphans. Otherwise they are the new owner's too.
            await self._drop_blobs(file)

    async def _fail(self, file: File, reason: str) -> None:
        async with self.pool.acquire() as conn:
            failed = await store.fail_file(conn, file.id, self.id, reason)
        if failed:
            UPLOADS_FAILED.inc()
            await self._drop_blobs(file)
        log.warning(
            "file failed: %s", reason, extra={"action": "file_failed" if failed else "lease_lost", "file_id": file.id}
        )

    async def _drop_blobs(self, file: File) -> None:
        try:
            await storage.delete_file_blobs(self.store, [file.filename])
        except StorageUnavailable as e:  # orphans now: the cleanup pass removes them later
            log.warning(
                "could not remove the blobs of file %s: %s",
                file.id,
                e,
                extra={"action": "blob_delete_failed", "file_id": file.id},
            )

    async def _retry(self, file: File, delay: float, count_attempt: bool = True) -> None:
        async with self.pool.acquire() as conn:
            await store.retry_file(conn, file.id, self.id, delay, count_attempt)

    async def _settle(self, record: Callable[[], Awaitable[None]]) -> None:
        """Recording the outcome must not be lost to a database hiccup: while this worker lives and
        heartbeats, nobody else would take the file back. Retried until it sticks or we stop."""
        delay = 0.5
        while True:
            try:
                return await record()
            except db_errors() as e:
                if self._stop.is_set():
                    return  # close() releases the file
                if not db.unavailable(e, self.settings):
                    log.warning("recording an outcome failed: %s", e, extra={"action": "settle_retry"})
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETTLE_MAX_DELAY)


def check_chunks(chunks: list[tuple[int, int]], size: int) -> None:
    """Chunks may have any lengths (tus writes what it receives), but must be 0..n-1 with no gap and
    hold exactly the declared size."""
    gaps = [i for i, (index, _) in enumerate(chunks) if index != i]
    if gaps:
        raise CorruptContent(f"chunks are not contiguous from 0: expected index {gaps[0]}, found {chunks[gaps[0]][0]}")
    total = sum(length for _, length in chunks)
    if total != size:
        raise CorruptContent(f"chunks hold {total} bytes, the upload declared {size}")


def db_errors() -> tuple[type[BaseException], ...]:
    return db.CONNECTION_LOST + (asyncpg.PostgresError, OSError, asyncio.TimeoutError)


async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """The worker inside `chunkd serve`, on the app's pool."""
    worker = app[worker_key] = Worker(app[settings_key], app[pool_key], app[storage_key])
    task = asyncio.create_task(worker.run(), name="worker")
    yield
    worker.stop()
    await task


async def run_standalone(settings: Settings) -> None:
    """`chunkd worker`: its own small pool, until SIGTERM or SIGINT."""
    # min_size=0: started before the database, the worker waits for it instead of failing.
    pool = await db.create_pool(settings, min_size=0, max_size=settings.worker_concurrency + 2)
    try:
        worker = Worker(settings, pool)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()
    finally:
        await asyncio.wait_for(pool.close(), timeout=10)
