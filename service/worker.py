"""The processing worker: claims PROCESSING files, assembles, analyses and finishes them.

Any number of workers share one database. A file is claimed with one UPDATE ... FOR UPDATE SKIP LOCKED,
so two workers never take the same one; NOTIFY files_ready wakes idle workers, polling is the safety
net. A claim is a lease: files.worker_id points at the worker's row in `workers`, kept alive by
heartbeats; a worker silent for WORKER_LEASE is deleted by the others, which puts its files back
in the queue (ON DELETE SET NULL). Every state change is guarded by `worker_id = me` in SQL.

Processing a file comes to one Outcome (service.outcomes: Finished, Failed, RetryAfter), recorded in one
place (_record). Only bytes that are themselves wrong fail a file; a fault of its environment (a full,
read-only or failing disk, a missing STORAGE_DIR, an unreachable store) leaves it PROCESSING with all its
chunks, tried again after BLOCKED_BACKOFF_MIN, doubling up to BLOCKED_BACKOFF_MAX, never counted against
MAX_ATTEMPTS, with one WARNING per step and the chunkd_processing_blocked gauge.

The side tasks (listener, heartbeat, cleanup, webhook deliveries, streamer) are watched: one that ends by
itself is a bug (each handles the faults it expects), and stops the worker loudly, as procrastinate's
_monitor_side_tasks does: a CRITICAL line with its traceback at once, then SideTaskDied once stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from service import assembly, cleanup, db, storage, webhooks
from service.assembly import Prefix, remove_stale_copies
from service.config import Settings
from service.keys import on_worker_death_key, pool_key, settings_key, storage_key, worker_key
from service.media.pool import DecoderPool
from service.media.result import Analysis
from service.metrics import PROCESSING_SECONDS, UPLOADS_COMPLETED, UPLOADS_FAILED
from service.models import File
from service.outcomes import CorruptContent, Failed, Finished, Outcome, RetryAfter, blocked_delay, blocked_reason
from service.storage import BlobStore, StorageUnavailable
from service.store import workers as store
from service.store.files import FILES_READY
from service.streaming import Streamer

log = logging.getLogger("service.worker")

MAX_ATTEMPTS = 5  # claims of one file; then FAILED, so a file that kills workers cannot loop forever
MAX_RETRY_DELAY = 300  # seconds; transient failures back off 2, 4, 8 ... up to this
SETTLE_MAX_DELAY = 2.0  # seconds between tries to record an outcome: the file waits on them, a try is cheap
INTERRUPTED_RETRY_DELAY = 1.0  # seconds before a file whose processing lost the database is taken again
POLL_INTERVAL = 5.0  # seconds between claims when no NOTIFY arrives
SHUTDOWN_TIMEOUT = 30.0  # seconds running files get to finish on stop; the rest go back to the queue


class SideTaskDied(RuntimeError):
    """A task the worker cannot work without (listener, heartbeat, cleanup, deliveries, streamer) ended."""


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

    # lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Claims and processes files until stop(); then lets running ones finish and unregisters. A side
        task that ends by itself stops the worker the same way, is logged CRITICAL, and SideTaskDied is raised."""
        if not await self._register_until_stopped():
            return
        side = [
            asyncio.create_task(self.listener.run(), name="worker listener"),
            asyncio.create_task(self._heartbeat_loop(), name="worker heartbeat"),
            asyncio.create_task(self._cleanup_loop(), name="worker cleanup"),
            asyncio.create_task(self.deliveries.run(), name="webhook deliveries"),
        ]
        streamer = asyncio.create_task(self.streamer.run(), name="worker streamer") if self.streamer.enabled else None
        watched = side + ([streamer] if streamer is not None else [])
        claiming = asyncio.create_task(self._loop(), name="worker loop")
        log.info("worker started", extra={"action": "worker_started", "worker_id": self.id})
        with contextlib.suppress(OSError):  # leftovers of a killed worker on this machine
            await asyncio.to_thread(remove_stale_copies, self.settings.work_path, cleanup.TEMP_GRACE)
        died: asyncio.Task[None] | None = None
        try:
            await asyncio.wait([claiming, *watched], return_when=asyncio.FIRST_COMPLETED)
            died = next((task for task in watched if task.done()), None)
            if died is not None:
                self._side_task_died(died)
                self.stop()
            await claiming  # returns once stop() is seen
        finally:
            claiming.cancel()
            await self._drain()  # still heartbeating (unless that died): the files being finished stay ours
            if streamer is not None:  # the streamed files being finished get the same time, also heartbeating
                streamer.cancel()
                await asyncio.gather(streamer, return_exceptions=True)
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            await self.close()
            log.info("worker stopped", extra={"action": "worker_stopped", "worker_id": self.id})
        if died is not None:
            raise SideTaskDied(f"the worker's side task {died.get_name()!r} ended") from (
                None if died.cancelled() else died.exception()
            )

    def _side_task_died(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        log.critical(
            "worker stopping: its side task %r ended%s",
            task.get_name(),
            f" with {error!r}" if error else "",
            exc_info=error,
            extra={"action": "worker_side_task_died", "worker_id": self.id},
        )

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
        with contextlib.suppress(*db.DATABASE_FAULTS):
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
            except db.DATABASE_FAULTS as e:
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
            except db.DATABASE_FAULTS as e:
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
        task = asyncio.create_task(self.process(file), name=f"process file {file.id}")
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
            except db.DATABASE_FAULTS as e:
                if not db.unavailable(e, self.settings):
                    log.warning("heartbeat failed: %s", e, extra={"action": "heartbeat_failed", "worker_id": self.id})
            await asyncio.sleep(self.lease / 3)

    async def _cleanup_loop(self) -> None:
        """The cleanup pass every CLEANUP_INTERVAL; its advisory lock keeps it to one process at a time."""
        while True:
            await asyncio.sleep(self.settings.cleanup_interval)
            try:
                await cleanup.run_cleanup(self.pool, self.settings, self.store)
            except (*db.DATABASE_FAULTS, StorageUnavailable) as e:
                if not db.unavailable(e, self.settings):
                    log.warning("cleanup failed: %s", e, extra={"action": "cleanup_failed", "worker_id": self.id})

    # processing -----------------------------------------------------------------------------------
    async def process(self, file: File, prefix: Prefix | None = None) -> None:
        """Processes a file this worker holds: from scratch, or from the prefix the streamer assembled.
        What it comes to is recorded shielded: a stop that arrives meanwhile does not lose it."""
        started = time.monotonic()
        log.info("file claimed", extra={"action": "file_claimed", "file_id": file.id, "attempt": file.attempts})
        try:
            outcome = await self._outcome(file, prefix)
            await asyncio.shield(self._settle(file, outcome))
        finally:
            PROCESSING_SECONDS.observe(time.monotonic() - started)

    async def _outcome(self, file: File, prefix: Prefix | None) -> Outcome:
        """What processing the file came to. Raises only CancelledError (stopping: close() hands it back)."""
        if file.attempts > MAX_ATTEMPTS:
            if prefix is not None:
                await asyncio.shield(prefix.assembly.discard())
            return Failed(f"gave up after {MAX_ATTEMPTS} attempts: the workers processing it stopped")
        try:
            digest, analysis = await self._assemble_and_analyse(file, prefix)
        except CorruptContent as e:
            return Failed(str(e))
        except db.DATABASE_DOWN as e:
            # Nothing is wrong with the file: taken again a moment later (not hot: a client-side asyncpg error
            # that keeps coming back is then a steady trickle of warnings, not a busy loop).
            return RetryAfter(INTERRUPTED_RETRY_DELAY, f"the database went away: {e!r}", counted=False)
        except Exception as e:
            blocked = blocked_reason(e)
            if blocked is not None:  # the environment's fault: the chunks stay, for as long as it lasts
                delay = blocked_delay(self.settings, file.blocked_retries)
                return RetryAfter(delay, f"{type(e).__name__}: {e}", counted=False, blocked=blocked)
            # May pass, or may be a bug: retried with backoff, FAILED after MAX_ATTEMPTS.
            if file.attempts >= MAX_ATTEMPTS:
                return Failed(f"gave up after {file.attempts} attempts: {type(e).__name__}: {e}")
            return RetryAfter(min(2**file.attempts, MAX_RETRY_DELAY), f"{type(e).__name__}: {e}")
        return Finished(digest, analysis)

    async def _assemble_and_analyse(self, file: File, prefix: Prefix | None) -> tuple[str, Analysis]:
        """The chunks streamed into the store (and a local copy), analysed from the local copy, the
        thumbnail stored, then the blob committed: its key shows only complete, checked bytes."""
        started = time.monotonic()
        blob, digest = await assembly.assemble(self.pool, self.store, self.settings.work_path, file, prefix)
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
            analysis = await self.decoders.analyse(blob.path)  # the child processes read a local file
            if analysis.thumbnail is not None:
                key = storage.thumbnail_key(file.filename, analysis.thumbnail.mimetype)
                await storage.put_bytes(self.store, key, analysis.thumbnail.data)
            await blob.commit()
        except BaseException:
            await asyncio.shield(blob.discard())
            raise
        return digest, analysis

    async def _settle(self, file: File, outcome: Outcome) -> None:
        """Records the outcome. That must not be lost to a database hiccup: while this worker lives and
        heartbeats, nobody else would take the file back. Retried until it sticks or we stop."""
        delay = 0.5
        while True:
            try:
                return await self._record(file, outcome)
            except db.DATABASE_FAULTS as e:
                if self._stop.is_set():
                    return  # close() releases the file
                if not db.unavailable(e, self.settings):
                    log.warning("recording an outcome failed: %s", e, extra={"action": "settle_retry"})
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETTLE_MAX_DELAY)

    async def _record(self, file: File, outcome: Outcome) -> None:
        """The one place an outcome becomes the file's state."""
        extra = {"file_id": file.id, "attempt": file.attempts}
        if isinstance(outcome, Finished):
            await self._finish(file, outcome)
        elif isinstance(outcome, Failed):
            async with self.pool.acquire() as conn:
                failed = await store.fail_file(conn, file.id, self.id, outcome.reason)
            if failed:
                UPLOADS_FAILED.inc()
                await self._drop_blobs(file)
            log.warning(
                "file failed: %s", outcome.reason, extra={**extra, "action": "file_failed" if failed else "lease_lost"}
            )
        elif outcome.blocked is not None:
            async with self.pool.acquire() as conn:
                await store.block_file(conn, file.id, self.id, outcome.delay, outcome.blocked)
            log.warning(
                "processing file %s is held back by its environment (%s: %s); trying again in %g s (step %d)",
                file.id,
                outcome.blocked,
                outcome.reason,
                outcome.delay,
                file.blocked_retries + 1,
                extra={**extra, "action": "file_blocked", "reason": outcome.blocked},
            )
        else:
            async with self.pool.acquire() as conn:
                await store.retry_file(conn, file.id, self.id, outcome.delay, outcome.counted)
            log.warning(
                "processing file %s: %s; retrying in %g s",
                file.id,
                outcome.reason,
                outcome.delay,
                extra={**extra, "action": "file_retry" if outcome.counted else "file_interrupted"},
            )
        if isinstance(outcome, RetryAfter) and not outcome.counted:  # taken again on time, not at the next poll
            asyncio.get_running_loop().call_later(outcome.delay, self._wake.set)

    async def _finish(self, file: File, finished: Finished) -> None:
        analysis = finished.analysis
        metadata = {
            "sha256": finished.digest,
            "size": file.size,
            "claimed_mimetype": file.mimetype,
            **analysis.metadata,
        }
        async with self.pool.acquire() as conn:
            if await store.finish_file(conn, file.id, self.id, analysis.type, analysis.mimetype, metadata):
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
                except db.DATABASE_FAULTS as e:  # COMPLETED stands; the cleanup pass drops them later
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


async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """The worker inside `chunkd serve`, on the app's pool."""
    worker = app[worker_key] = Worker(app[settings_key], app[pool_key], app[storage_key])
    task = asyncio.create_task(worker.run(), name="worker")
    task.add_done_callback(lambda _: _on_worker_end(app, task))
    yield
    worker.stop()
    with contextlib.suppress(SideTaskDied):  # said loudly when it happened
        await task


def _on_worker_end(app: web.Application, task: asyncio.Task[None]) -> None:
    """A worker that died of a side task stops `chunkd serve` (its hook): a server without its worker would
    accept uploads that are never processed."""
    if not task.cancelled() and isinstance(task.exception(), SideTaskDied) and on_worker_death_key in app:
        app[on_worker_death_key]()


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
