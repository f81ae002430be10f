"""One writer per tus upload across every chunkd process, and the takeover of stalled writers.

The rule is a PostgreSQL advisory lock per upload, held on one connection of this process's own,
outside the pool (never on a pooled connection: a request holds its lock while its client's bytes
trickle, and a pooled connection held that long is one fewer for everyone else). Why a lock connection
rather than a lease in the row: PostgreSQL drops the locks of a process that dies with its connection,
at once, so there is no lease length to choose, no heartbeat writing into the files row while bytes
arrive, and no delay before a dead server's upload can be resumed. One connection holds the locks of
all of a process's writers (a session can hold any number); its queries are short and one at a time.

Advisory locks are re-entrant within a session, so within this process `writers` is the rule and the
database lock is taken for the other processes. A request that finds the lock taken asks the holder
to let go — directly in this process, with NOTIFY tus_release for the others — and retries for
`lock_wait` seconds. A holder gives way when it has received nothing for `stall_after` seconds (its
client is most likely gone: tusd v2 does the same), or at once when the upload is being terminated;
it then saves what it has and unlocks. An active writer keeps the lock: a second PATCH racing it gets
423, never a mixed-up file. Should the lock connection be lost, its locks go with it: it is opened
again on next use and takes back the locks of the writers still running (one that cannot is stopped);
meanwhile each stored piece still moves the offset only from the value its writer read, so a race
loses a request, never bytes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
from aiohttp import web

from service import db
from service.config import Settings
from service.errors import TusUploadLocked
from service.keys import settings_key, tus_locks_key
from service.store import tus as store

log = logging.getLogger("service.tus")
T = TypeVar("T")


@dataclass(eq=False)
class Writer:
    """The request holding an upload's lock, as seen by those who want it."""

    upload_id: str
    stall_after: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    last_progress: float = field(default_factory=time.monotonic)
    forced: bool = False
    locked: bool = False  # holds the database lock (not only a place in this process's writers)

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def ask_release(self, force: bool) -> None:
        if force or time.monotonic() - self.last_progress >= self.stall_after:
            self.forced = self.forced or force
            self.stop.set()


class UploadLocks:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stall_after = 2.0  # seconds without a byte before a writer counts as stalled
        self.lock_wait = 5.0  # how long a request tries for a taken lock before answering 423
        self.nudge_every = 0.25  # how often it repeats its request to the holder meanwhile
        self.writers: dict[str, Writer] = {}
        self._conn: asyncpg.Connection | None = None
        self._turn = asyncio.Lock()  # one query at a time on the lock connection

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str, *, force: bool = False) -> AsyncIterator[Writer]:
        """The upload's lock; TusUploadLocked if it cannot be had in time. The unlock runs to its end
        even when the request is cancelled (it is a task of its own), so no lock outlives its request."""
        writer = await self._take(upload_id, force)
        try:
            yield writer
        finally:
            self.writers.pop(upload_id, None)
            await asyncio.shield(asyncio.ensure_future(self._unlock(upload_id)))

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 5)
            self._conn = None

    async def _take(self, upload_id: str, force: bool) -> Writer:
        deadline = time.monotonic() + self.lock_wait
        next_nudge = 0.0
        writer = Writer(upload_id, self.stall_after)
        while True:
            if upload_id not in self.writers:
                self.writers[upload_id] = writer  # before awaiting: no other task of ours can take it meanwhile
                try:
                    writer.locked = await self._query(store.try_lock_upload, upload_id)
                except BaseException:
                    self.writers.pop(upload_id, None)
                    raise
                if writer.locked:
                    return writer
                self.writers.pop(upload_id, None)
            now = time.monotonic()
            if now >= deadline:
                raise TusUploadLocked(
                    f"another request is writing upload {upload_id}; retry later", headers={"Retry-After": "1"}
                )
            if now >= next_nudge:
                self._ask_release(upload_id, force)
                await self._query(store.notify_release, upload_id, force)
                next_nudge = now + self.nudge_every
            await asyncio.sleep(0.05)

    async def _unlock(self, upload_id: str) -> None:
        try:
            await self._query(store.unlock_upload, upload_id)
        except (*db.DATABASE_DOWN, asyncpg.PostgresError) as e:  # a lost connection took the lock with it
            log.info("unlocking upload %s: %s", upload_id, e, extra={"action": "tus_unlock_failed"})

    async def _query(self, query: Callable[..., Awaitable[T]], *args: object) -> T:
        async with self._turn:
            if self._conn is None or self._conn.is_closed():
                await self._reconnect()
            assert self._conn is not None
            return await query(self._conn, *args)

    async def _reconnect(self) -> None:
        """A new lock connection; the writers still running take their locks back on it."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        conn = await db.connect(self.settings)
        for upload_id, writer in [(u, w) for u, w in self.writers.items() if w.locked]:
            if not await store.try_lock_upload(conn, upload_id):
                log.warning(
                    "upload %s: the lock was lost and taken by another process; stopping this writer",
                    upload_id,
                    extra={"action": "tus_lock_lost", "upload_id": upload_id},
                )
                writer.stop.set()
        self._conn = conn

    def _ask_release(self, upload_id: str, force: bool) -> None:
        writer = self.writers.get(upload_id)
        if writer is not None:
            writer.ask_release(force)

    def on_release(self, payload: str) -> None:
        """A NOTIFY tus_release from any process: `<1|0> <upload id>`."""
        force, _, upload_id = payload.partition(" ")
        self._ask_release(upload_id, force == "1")


async def tus_locks_ctx(app: web.Application) -> AsyncIterator[None]:
    locks = app[tus_locks_key] = UploadLocks(app[settings_key])
    # Takeover requests from other processes; a lost one is repeated every nudge_every seconds.
    async with db.listening(app[settings_key], {store.RELEASE_CHANNEL: locks.on_release}, name="tus release listener"):
        yield
    await locks.close()
