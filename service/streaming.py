"""Assembly while an upload is still arriving, so that it is COMPLETED soon after its last byte.

A worker takes hold of a large UPLOADING file that is receiving chunks (files.worker_id, the same lease
as processing) and appends the contiguous prefix of its chunks to the blob's write in the store (service.storage: a
temporary file, or a multipart upload) as they are committed: tus uploads and in-order native ones are contiguous by nature. When the upload completes
(NOTIFY files_ready), only the tail is left to append before the worker's usual processing (fsync,
rename, sniffing, thumbnail, COMPLETED) carries on from that prefix.

Nothing is lost by a crash at any moment: chunks stay in PostgreSQL until the blob holding them is
durable and the file COMPLETED, so the prefix is only a head start. A worker that dies lets its hold
go with its lease; the upload is then streamed again from its first chunk, or assembled whole once
complete, from the same rows. An upload idle for ACTIVE_SECONDS is let go (its client may be gone
for the day) and taken again when chunks arrive.

Chunks received by this same process are not read back from PostgreSQL: the handler that stored one
offers its bytes once its transaction has committed (offer_chunk), and the streamer appends them from
memory (bench/compare.py: reading a GiB back cost PostgreSQL about 1 CPU-s and chunkd about as much
again, and made the streamer lag behind fast uploads). An offer is only ever a committed chunk's bytes,
so the blob is the same whichever way they came; offers are bounded (OFFER_LIMIT) and one that does
not fit or finds no stream is simply not kept: its row is read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from service import db
from service.assembly import Assembly, Prefix, append_chunks
from service.config import MiB
from service.keys import worker_key
from service.models import File, FileStatus
from service.outcomes import CorruptContent, blocked_delay, blocked_reason
from service.storage import blob_key
from service.store import streaming as store

if TYPE_CHECKING:
    from service.worker import Worker

log = logging.getLogger("service.streaming")

ACTIVE_SECONDS = 30.0  # an upload with no chunk for this long is not (or no longer) held
CLAIM_INTERVAL = 1.0  # seconds between looks for an upload to take, while a slot is free
POLL_MIN, POLL_MAX = 0.05, 1.0  # seconds between looks for new chunks: doubling while none come
SWEEP_EVERY = 30  # claim looks between sweeps for files held by no task
# Bytes of offered chunks a process keeps for its streams at once. Chunks in flight together commit in
# any order, so a stream needs room for those ahead of the one it waits for, and one that falls behind
# reads the chunks it could not keep back from PostgreSQL, more slowly than they arrive, and rarely
# catches up. bench.compare --pg-detail, native x4, 3 pairs: 16 MiB (two chunks) read 135,000-387,000
# of a GiB's 540,000 TOAST tuples back, 64 MiB 0-21,000 (PostgreSQL 7.0-7.9 CPU-s/GiB instead of
# 7.6-11.3, chunkd 3.4-4.2 instead of 4.3-5.0). The room is used only while a stream is behind.
OFFER_LIMIT = 64 * MiB
WAITING_SECONDS = 5.0  # offers kept for an upload not held yet


@dataclass
class _Held:
    """A file this worker streams: set `ready` once it completes, `wake` whenever there is news."""

    ready: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    prefix: Prefix | None = None  # once the blob's write is open
    offers: dict[int, bytes | bytearray] = field(default_factory=dict)  # committed chunks, by index
    offered: bool = False  # a receiver in this process offers its chunks: poll the database less
    since: float = field(default_factory=time.monotonic)
    unkept: int = -1  # the highest index offered but not kept: read from its row


def offer_chunk(app: web.Application, upload: File, index: int, data: bytes | bytearray) -> None:
    """A chunk of `upload` was just committed with these bytes (which nobody changes any more): the
    stream of this process's worker, if it holds the file (or takes it soon), appends them without
    reading them back."""
    worker = app.get(worker_key)
    if worker is not None:
        worker.streamer.offer(upload, index, data)


class Streamer:
    """One worker's streaming side: up to `slots` uploads held at once, each in a task of its own."""

    def __init__(self, worker: Worker, min_size: int, slots: int) -> None:
        self.worker, self.min_size = worker, min_size
        self.enabled = min_size > 0
        self._slots = asyncio.Semaphore(slots)
        self._held: dict[str, _Held] = {}  # the files being streamed
        self._offered = 0  # bytes of all offers kept
        self._look_now = asyncio.Event()  # a first chunk was received: look for an upload to take
        self._waiting: dict[str, _Held] = {}  # offers for uploads not taken yet
        self._elsewhere: dict[str, float] = {}  # uploads not taken in time: when they were given up
        self._tasks: set[asyncio.Task[None]] = set()
        self._processing: set[asyncio.Task[None]] = set()  # handed over: given time to finish on stop
        self._paused_until = 0.0  # monotonic time before which no upload is taken (its environment failed us)
        self._blocked_steps = 0  # environment faults in a row: the pause doubles at each

    def ready(self, file_id: str) -> None:
        held = self._held.get(file_id)
        if held is not None:
            held.ready.set()
            held.wake.set()
        waiting = self._waiting.pop(file_id, None)
        if waiting is not None:  # complete before it was taken: it is processed from its rows
            self._drop_offers(waiting)

    def offer(self, upload: File, index: int, data: bytes | bytearray) -> None:
        """See offer_chunk."""
        held = self._held.get(upload.id)
        if held is None:
            # Not held yet, but it may be taken in a moment (it is looked for at once): its offers wait
            # for that a few seconds, so that its first chunks need not be read back either.
            if not self.enabled or upload.size < self.min_size or upload.size_deferred or upload.tus_concat:
                return
            if upload.id in self._elsewhere:  # not taken in time before: another worker streams it
                return
            self._forget_waiting()
            held = self._waiting.setdefault(upload.id, _Held())
            self._look_now.set()
        if index < (held.prefix.next_index if held.prefix else 0) or index in held.offers:
            return
        held.offered = True
        # No room: the offers furthest ahead make way for a nearer one (they are needed later); what
        # is not kept is read from its row, so the stream looks at the database soon again.
        while self._offered + len(data) > OFFER_LIMIT and held.offers and max(held.offers) > index:
            furthest = max(held.offers)
            self._take_offer(held, furthest)
            held.unkept = max(held.unkept, furthest)
        if self._offered + len(data) > OFFER_LIMIT:
            held.unkept = max(held.unkept, index)
            return
        held.offers[index] = data
        self._offered += len(data)
        held.wake.set()

    def _take_offer(self, held: _Held, index: int) -> bytes | bytearray | None:
        data = held.offers.pop(index, None)
        if data is not None:
            self._offered -= len(data)
        return data

    def _drop_offers(self, held: _Held) -> None:
        for index in list(held.offers):
            self._take_offer(held, index)

    def _forget_waiting(self) -> None:
        """Drops the offers of uploads not taken within WAITING_SECONDS (another worker took them, or
        none could): their later chunks are not offered for ACTIVE_SECONDS either."""
        now = time.monotonic()
        for file_id, held in list(self._waiting.items()):
            if now - held.since > WAITING_SECONDS:
                self._drop_offers(self._waiting.pop(file_id))
                self._elsewhere[file_id] = now
        for file_id, since in list(self._elsewhere.items()):
            if now - since > ACTIVE_SECONDS:
                del self._elsewhere[file_id]

    async def run(self) -> None:
        """Takes uploads to stream while slots are free, until cancelled."""
        looks = 0
        try:
            while True:
                looks += 1
                self._forget_waiting()
                if looks % SWEEP_EVERY == 0:
                    with contextlib.suppress(Exception):  # the database is away: next time
                        await self._sweep()
                paused = self._paused_until - time.monotonic()
                if paused > 0:
                    await asyncio.sleep(paused)
                    continue
                await self._slots.acquire()
                file = None
                try:
                    file = await self._claim()
                except Exception as e:  # the database is away: streaming waits, uploads go on
                    if not db.unavailable(e, self.worker.settings):
                        log.warning(
                            "claiming an upload to stream failed: %s", e, extra={"action": "stream_claim_failed"}
                        )
                if file is None:
                    self._slots.release()
                    # Offers wait for an upload that could not be taken yet (its receiver's transaction
                    # had its row locked): look again soon rather than at the next interval.
                    interval = POLL_MIN * 2 if self._waiting else CLAIM_INTERVAL
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._look_now.wait(), interval)
                    self._look_now.clear()
                    continue
                # Before the task runs: _sweep must see it as ours. It takes the offers that waited for it.
                self._held[file.id] = self._waiting.pop(file.id) if file.id in self._waiting else _Held()
                task = asyncio.create_task(self._stream(file), name=f"stream file {file.id}")
                self._tasks.add(task)
                task.add_done_callback(self._on_done)
        finally:
            await self._stop()

    async def _sweep(self) -> None:
        """Lets go of files this worker holds but works on no more: a release that could not be recorded
        while the database was away would otherwise keep them from everyone for as long as we live."""
        async with self.worker.pool.acquire() as conn:
            held = await store.list_held_files(conn, self.worker.id)
            busy = set(self._held) | set(self.worker.processing.values())
            for file_id in held:
                if file_id not in busy:
                    log.warning(
                        "releasing file %s held by no task",
                        file_id,
                        extra={"action": "stream_swept", "file_id": file_id},
                    )
                    await store.release_file(conn, file_id, self.worker.id)

    async def _claim(self) -> File | None:
        async with self.worker.pool.acquire() as conn:
            return await store.claim_uploading_file(conn, self.worker.id, self.min_size, ACTIVE_SECONDS)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._processing.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("streaming task failed", exc_info=task.exception(), extra={"action": "worker_bug"})

    async def _stop(self) -> None:
        """Files already being processed get the worker's shutdown time; streaming is dropped at once
        (the chunks are all still in the database)."""
        for task in self._tasks - self._processing:
            task.cancel()
        if self._processing:
            await asyncio.wait(set(self._processing), timeout=self.worker.shutdown_timeout)
        # Only those past their time: a second cancel would interrupt the others' own cleanup (closing and
        # removing their temporary file), which then outlives the event loop.
        for task in self._processing:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _stream(self, file: File) -> None:
        worker = self.worker
        log.info("streaming upload", extra={"action": "stream_started", "file_id": file.id})
        held = self._held[file.id]
        assembly: Assembly | None = None
        handed_over = False
        try:
            # a local temporary file is synced as it grows
            assembly = await Assembly.begin(worker.store, blob_key(file.filename), worker.settings.work_path, file.size)
            prefix = held.prefix = Prefix(assembly, 0)
            delay, last_chunk = POLL_MIN, time.monotonic()
            while True:
                held.wake.clear()
                progressed = await self._append_offered(held, prefix)
                claimed = None
                # Offers say nothing of the upload's status: the database is asked when none came, or
                # once it has completed.
                if not progressed or held.ready.is_set():
                    async with worker.pool.acquire_bulk() as conn:  # chunks stream out on it: bulk work
                        # The status first: once it says PROCESSING, every chunk is committed and seen below.
                        status = await store.get_held_status(conn, file.id, worker.id)
                        if status is None:
                            return  # deleted, expired and cleaned up, or no longer ours
                        chunks = _contiguous(
                            await store.list_chunks_from(conn, file.id, prefix.next_index), prefix.next_index
                        )
                        if chunks:
                            await self._append(conn, file.id, held, prefix, chunks)
                            progressed = True
                        if status == FileStatus.PROCESSING:
                            claimed = await store.take_streamed_file(conn, file.id, worker.id)
                            if claimed is None:
                                return
                        elif status != FileStatus.UPLOADING:
                            return
                if claimed is not None:
                    handed_over = True
                    self._drop_offers(held)
                    self._blocked_steps = 0  # its environment let it through
                    self._processing.add(asyncio.current_task())  # type: ignore[arg-type]
                    await worker.process(claimed, prefix)
                    return
                if progressed:
                    # Chunks offered by their receivers need no polling; others are looked for soon.
                    offers_come = held.offered and prefix.next_index > held.unkept
                    delay, last_chunk = (POLL_MAX if offers_come else POLL_MIN), time.monotonic()
                    continue
                if time.monotonic() - last_chunk > ACTIVE_SECONDS:
                    log.info("upload idle: no longer streamed", extra={"action": "stream_idle", "file_id": file.id})
                    await self._release(file)
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(held.wake.wait(), delay)
                delay = min(delay * 2, POLL_MAX)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # The database or the disk failed us (or a chunk vanished): streaming is only a head start,
            # so the file is let go and processed the usual way once complete; the lease does the same
            # if even the release cannot be recorded. A fault of the environment (a full disk) pauses
            # streaming altogether, with the worker's backoff: it would only fill the disk again.
            blocked = blocked_reason(e)
            if blocked is None:
                log.warning(
                    "streaming upload %s stopped: %r", file.id, e, extra={"action": "stream_failed", "file_id": file.id}
                )
            else:
                self._pause(file, blocked, e)
            with contextlib.suppress(Exception):
                await self._release(file)
        finally:
            self._drop_offers(held)
            self._held.pop(file.id, None)
            if not handed_over and assembly is not None:
                await asyncio.shield(assembly.discard())

    async def _append_offered(self, held: _Held, prefix: Prefix) -> bool:
        """Appends the offered chunks that come next; True if there was one."""
        appended = False
        while (data := self._take_offer(held, prefix.next_index)) is not None:
            await prefix.assembly.write(data)
            prefix.next_index += 1
            appended = True
        return appended

    async def _append(
        self, conn: asyncpg.Connection, file_id: str, held: _Held, prefix: Prefix, chunks: list[tuple[int, int]]
    ) -> None:
        """The listed chunks in order: offered ones from memory, runs of the others from their rows."""
        run: list[tuple[int, int]] = []
        for index, length in [*chunks, (-1, 0)]:  # the sentinel ends the last run
            data = self._take_offer(held, index) if index >= 0 else None
            if run and (data is not None or index < 0):
                await append_chunks(conn, file_id, run, prefix.assembly)
                prefix.next_index, run = run[-1][0] + 1, []
            if data is not None:
                if len(data) != length:
                    raise CorruptContent(f"chunk {index} was offered with {len(data)} bytes, its row has {length}")
                await prefix.assembly.write(data)
                prefix.next_index = index + 1
            elif index >= 0:
                run.append((index, length))
        for index in [i for i in held.offers if i < prefix.next_index]:  # read from their rows meanwhile
            self._take_offer(held, index)

    def _pause(self, file: File, blocked: str, error: Exception) -> None:
        delay = blocked_delay(self.worker.settings, self._blocked_steps)
        self._blocked_steps += 1
        self._paused_until = max(self._paused_until, time.monotonic() + delay)
        log.warning(
            "streaming paused for %g s: upload %s is held back by its environment (%s: %s)",
            delay,
            file.id,
            blocked,
            error,
            extra={"action": "stream_blocked", "file_id": file.id, "reason": blocked},
        )

    async def _release(self, file: File) -> None:
        async with self.worker.pool.acquire() as conn:
            await store.release_file(conn, file.id, self.worker.id)


def _contiguous(chunks: list[tuple[int, int]], first: int) -> list[tuple[int, int]]:
    """The run of chunks first, first + 1, ... with no gap (native chunks may arrive out of order)."""
    run: list[tuple[int, int]] = []
    for index, length in chunks:
        if index != first + len(run):
            break
        run.append((index, length))
    return run
