"""One writer per tus upload across every chunkd process, and the takeover of stalled writers.

A request that reads or writes an upload holds a PostgreSQL advisory lock on a pooled connection for
its duration. A request that finds the lock taken asks the holder to let go — directly in this process,
with NOTIFY tus_release for the others — and retries for `lock_wait` seconds. A holder gives way when
it has received nothing for `stall_after` seconds (its client is most likely gone: tusd v2 does the
same), or at once when the upload is being terminated; it then saves what it has and unlocks.
An active writer keeps the lock: a second PATCH racing it gets 423, never a mixed-up file."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from service import db
from service.config import Settings
from service.db import Pool
from service.errors import TusUploadLocked
from service.keys import pool_key, settings_key, tus_locks_key
from service.store import tus as store


@dataclass(eq=False)
class Writer:
    """The request holding an upload's lock, as seen by those who want it."""
    upload_id: str
    stall_after: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    last_progress: float = field(default_factory=time.monotonic)
    forced: bool = False

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def ask_release(self, force: bool) -> None:
        if force or time.monotonic() - self.last_progress >= self.stall_after:
            self.forced = self.forced or force
            self.stop.set()


class UploadLocks:
    def __init__(self, pool: Pool, settings: Settings) -> None:
        self.pool, self.settings = pool, settings
        self.stall_after = 2.0    # seconds without a byte before a writer counts as stalled
        self.lock_wait = 5.0      # how long a request tries for a taken lock before answering 423
        self.nudge_every = 0.25   # how often it repeats its request to the holder meanwhile
        self.idle_timeout = 30.0  # a body that sends nothing for this long is cut off (the spec's 30 s)
        self.writers: dict[str, Writer] = {}

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str, *, force: bool = False) -> AsyncIterator[tuple[asyncpg.Connection, Writer]]:
        """The upload's lock and the connection holding it; TusUploadLocked if it cannot be had in time.
        Releasing the connection to the pool also drops the lock (the connection is marked for
        asyncpg's full reset, pg_advisory_unlock_all), so not even a cancelled request can leave it held."""
        async with self.pool.acquire() as conn:
            db.keeps_session_state(conn)
            await self._take(conn, upload_id, force)
            writer = Writer(upload_id, self.stall_after)
            self.writers[upload_id] = writer
            try:
                yield conn, writer
            finally:
                self.writers.pop(upload_id, None)
                await store.unlock_upload(conn, upload_id)

    async def _take(self, conn: asyncpg.Connection, upload_id: str, force: bool) -> None:
        deadline = time.monotonic() + self.lock_wait
        next_nudge = 0.0
        while not await store.try_lock_upload(conn, upload_id):
            now = time.monotonic()
            if now >= deadline:
                raise TusUploadLocked(f"another request is writing upload {upload_id}; retry later",
                                      headers={"Retry-After": "1"})
            if now >= next_nudge:
                self._ask_release(upload_id, force)
                await store.notify_release(conn, upload_id, force)
                next_nudge = now + self.nudge_every
            await asyncio.sleep(0.05)

    def _ask_release(self, upload_id: str, force: bool) -> None:
        writer = self.writers.get(upload_id)
        if writer is not None:
            writer.ask_release(force)

    def on_release(self, payload: str) -> None:
        """A NOTIFY tus_release from any process: `<1|0> <upload id>`."""
        force, _, upload_id = payload.partition(" ")
        self._ask_release(upload_id, force == "1")


async def tus_locks_ctx(app: web.Application) -> AsyncIterator[None]:
    locks = app[tus_locks_key] = UploadLocks(app[pool_key], app[settings_key])
    # Takeover requests from other processes; a lost one is repeated every nudge_every seconds.
    async with db.listening(app[settings_key], {store.RELEASE_CHANNEL: locks.on_release}, name="tus release listener"):
        yield
