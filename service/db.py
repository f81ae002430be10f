"""Connections: the per-process pool, its codecs, and dedicated LISTEN connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import asyncpg
from aiohttp import web

from service.config import MiB, Settings
from service.keys import pool_key, settings_key
from service.store import server

log = logging.getLogger("service.db")


def bulk_share(size: int) -> int:
    """Connections of a pool of `size` that bulk work may hold at once; the rest (a fifth, at least
    one once there are two) stay for short requests."""
    return max(1, size - max(1, size // 5))


class Pool(asyncpg.Pool):
    """asyncpg's pool with DATABASE_POOL_TIMEOUT applied to every acquire(), counting the acquires
    in progress (asyncpg keeps no public count of tasks waiting for a connection), and a share kept
    for short requests: bulk work (storing a body's bytes, assembling a file) goes through
    acquire_bulk(), which never holds more than bulk_share(size) connections. So 50 uploads storing
    chunks queue among themselves, and a status poll or a login finds a connection at once."""

    acquire_timeout: float | None = None
    waiting: int = 0
    bulk_slots: asyncio.Semaphore | None = None

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)

    @contextlib.asynccontextmanager
    async def acquire_bulk(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for bulk work, within its share; DATABASE_POOL_TIMEOUT covers the wait for the
        share and for the connection together (asyncio.TimeoutError, as acquire())."""
        assert self.bulk_slots is not None, "create_pool() sets the share"
        loop = asyncio.get_running_loop()
        deadline = None if self.acquire_timeout is None else loop.time() + self.acquire_timeout
        self.waiting += 1
        try:
            async with asyncio.timeout_at(deadline):
                await self.bulk_slots.acquire()
        finally:
            self.waiting -= 1
        try:
            left = None if deadline is None else max(deadline - loop.time(), 0.001)
            async with self.acquire(timeout=left) as conn:
                yield conn
        finally:
            self.bulk_slots.release()

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 - asyncpg.Pool.acquire(timeout=)
        # Both `async with pool.acquire()` and `await pool.acquire()` go through here (asyncpg < 0.33).
        self.waiting += 1
        try:
            return await super()._acquire(timeout)  # asyncpg's private method, untyped
        finally:
            self.waiting -= 1


class DatabaseUnreachable(ConnectionError):
    """No connection could be opened: the server is down or restarting. asyncpg lets the OS error of
    the attempt through (FileNotFoundError for a unix socket that is gone, ConnectionRefusedError for
    a closed port); this one name lets the error middleware tell it from a storage error."""


# The connection went away, or none could be made: the database is down, restarting or unreachable.
# Nothing about the request or the file is wrong; the same work succeeds once it is back.
# asyncpg's client-side errors belong here too: once a pooled connection is lost, the pool takes it
# back and any further use raises InterfaceError ("released back to the pool"), and a connection the
# server dropped before asyncpg noticed raises InternalClientError ("another operation is in progress").
CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    DatabaseUnreachable,
)
# The database is down, restarting, or the pool had no free connection in time (or is closing): the one
# tuple the error middleware, the handlers and the worker catch.
DATABASE_DOWN = CONNECTION_LOST + (asyncio.TimeoutError,)
# What a background loop's database call (the worker's bookkeeping, webhook deliveries) may raise and try
# again later: the database is down, refused the statement, or the socket failed.
DATABASE_FAULTS = DATABASE_DOWN + (asyncpg.PostgresError, OSError)


class Availability:
    """Whether this process can reach its database, as the last request, loop or listener found it. The
    loss is logged once (WARNING) and the return once (INFO), however many requests, worker loops and
    listeners meet it meanwhile: an outage is two lines in the log, not one per request or retry."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def lost(self, error: BaseException) -> None:
        if self.down_since is not None:
            log.debug("database still unavailable: %s", error, extra={"action": "database_still_unavailable"})
            return
        self.down_since = time.monotonic()
        log.warning(
            "database unavailable: %s; answering 503 and retrying until it is back",
            error or type(error).__name__,
            extra={"action": "database_lost"},
        )

    def back(self) -> None:
        if self.down_since is None:
            return
        seconds, self.down_since = time.monotonic() - self.down_since, None
        log.info(
            "database is back after %.1f s", seconds, extra={"action": "database_back", "ms": round(seconds * 1000)}
        )


# One per database URL in this process: the app, its listener and the worker of `chunkd serve` share it
# (and tests that run several apps in one process, each on a database of its own, do not).
_AVAILABILITY: dict[str, Availability] = {}


def availability(settings: Settings) -> Availability:
    return _AVAILABILITY.setdefault(settings.database_url, Availability())


def unavailable(error: BaseException, settings: Settings) -> bool:
    """True (and noted, logged once) when `error` says the database cannot be reached; False for the
    rest (a pool timeout under load, a query's own error), which the caller reports as before."""
    if not isinstance(error, CONNECTION_LOST):
        return False
    availability(settings).lost(error)
    return True


async def open_connection(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect for the pool and for dedicated connections."""
    try:
        conn = await asyncpg.connect(*args, **kwargs)
    except OSError as e:
        raise DatabaseUnreachable(f"cannot connect to the database: {e}") from e
    _widen_unix_send_buffer(conn)
    return conn


# A chunk reaches PostgreSQL as one bind parameter, up to MAX_CHUNK_SIZE in one message. A unix
# socket's send buffer is fixed at net.core.wmem_default (208 KiB on Linux), so with it the message goes
# out in slices, each waiting for the backend to drain the last; with 4 MiB the kernel takes most of it
# at once. Measured with an 8 MiB parameter inserted into a table that discards it: 39 -> 28 ms.
# The kernel caps the request at net.core.wmem_max. TCP sockets are left alone: they size their
# buffers themselves, and setting one would turn that off.
UNIX_SEND_BUFFER = 4 * MiB


def _widen_unix_send_buffer(conn: asyncpg.Connection) -> None:
    # asyncpg has no public hook for socket options; without its transport the default buffer stays.
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_SEND_BUFFER)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Runs once per new connection: json/jsonb in and out as Python objects."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


# Backend pids of pooled connections that took session-level state (an advisory lock). Everything else
# chunkd runs on pooled connections is scoped to a transaction, which asyncpg ends on release anyway.
_SESSION_STATE: set[int] = set()


def keeps_session_state(conn: asyncpg.Connection) -> None:
    """Call before taking a session-level advisory lock on a pooled connection: its release then runs
    asyncpg's full reset (pg_advisory_unlock_all among others), even when the request was cancelled."""
    _SESSION_STATE.add(conn.get_server_pid())


async def reset_released(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg has already rolled back an open transaction and dropped
    listeners; its full reset (RESET ALL, UNLISTEN *, CLOSE ALL, pg_advisory_unlock_all) costs one more
    round trip on every release, so only connections marked by keeps_session_state pay it. A failure
    here makes asyncpg terminate the connection."""
    pid = conn.get_server_pid()
    if pid in _SESSION_STATE:
        _SESSION_STATE.discard(pid)
        await conn.reset()


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int | None = None) -> Pool:
    pool = Pool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size or settings.db_pool_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=settings.db_pool_idle_timeout_ms / 1000,
        connect=open_connection,
        setup=None,
        init=init_connection,
        reset=reset_released,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=300,
    )
    pool.acquire_timeout = settings.db_pool_timeout_ms / 1000
    pool.bulk_slots = asyncio.Semaphore(bulk_share(max_size or settings.db_pool_size))
    await pool
    return pool


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    # min_size=0: the app starts (and /readyz can answer 503) while the database is down.
    app[pool_key] = await create_pool(app[settings_key], min_size=0)
    yield
    await asyncio.wait_for(app[pool_key].close(), timeout=10)


async def connect(settings: Settings) -> asyncpg.Connection:
    """A connection of its own, outside the pool: LISTEN, migrations, CLI commands."""
    conn = await open_connection(settings.database_url)
    await init_connection(conn)
    return conn


async def ensure_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE unless it exists; two processes racing are both fine."""
    conn = await asyncpg.connect(admin_url)
    try:
        await server.create_database_unless_exists(conn, name)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def listening(
    settings: Settings,
    channels: Mapping[str, Callable[[str], None]],
    *,
    name: str,
    on_connect: Callable[[], None] = lambda: None,
) -> AsyncIterator[None]:
    """A Listener running in a task of its own for as long as the block lasts (an app's cleanup_ctx)."""
    task = asyncio.create_task(Listener(settings, channels, on_connect=on_connect).run(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# Seconds between attempts to LISTEN again while the database is down. Short: until it is back, status
# changes reach long-polls and event streams only by their re-reads, and workers only by polling.
LISTENER_MAX_BACKOFF = 2.0


class Listener:
    """LISTEN on a dedicated connection: never a pooled one, whose listeners asyncpg drops on release.
    A `SELECT 1` every `heartbeat` seconds notices a dead connection, which is then re-opened with
    backoff. NOTIFY is only a hint: notifications sent while disconnected are lost, so `on_connect`
    runs after every (re)connection and callers poll as well."""

    def __init__(
        self,
        settings: Settings,
        channels: Mapping[str, Callable[[str], None]],
        on_connect: Callable[[], None] = lambda: None,
        heartbeat: float = 30,
    ) -> None:
        self.settings, self.channels, self.on_connect, self.heartbeat = settings, channels, on_connect, heartbeat
        self.connected = asyncio.Event()
        self.was_connected = False  # the last attempt got as far as listening
        self.availability = availability(settings)

    async def run(self) -> None:
        """Until cancelled."""
        backoff = 0.5
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure of the connection: note it, wait, reconnect
                if not unavailable(e, self.settings):
                    log.warning("listener connection lost: %s", e, extra={"action": "listener_lost"})
            backoff = 0.5 if self.was_connected else min(backoff * 2, LISTENER_MAX_BACKOFF)
            await asyncio.sleep(backoff)

    async def _listen(self) -> None:
        self.was_connected = False
        conn = await connect(self.settings)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            for channel, callback in self.channels.items():
                await conn.add_listener(channel, lambda _c, _pid, _ch, payload, cb=callback: cb(payload))
            self.connected.set()
            self.was_connected = True
            self.availability.back()
            self.on_connect()
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), self.heartbeat)
                except TimeoutError:
                    await server.ping(conn, 10)
        finally:
            self.connected.clear()
            conn.terminate()
