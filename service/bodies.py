"""Upload request bodies, received into bounded pieces for every protocol (native chunks, tus, ...).

A body is read as the client sends it into pieces of the size its caller asks for (a tus chunk row, a
native chunk); the caller takes a pooled database connection only to store a complete piece, so no
connection ever waits on a client's link. Three rules hold for every body, whatever its protocol:

- Memory: every byte held counts against CHUNK_MEMORY as it arrives (twice: the piece, and the
  database driver's copy of it while it is stored), never reserved up front for a declared length.
  A body that finds no room stops being read (TCP holds its client back) and ends with 503 when none
  is freed in time.
- Fairness: one user holds at most USER_INFLIGHT_REQUESTS bodies and USER_INFLIGHT_BYTES of that memory
  at once. A request beyond it is answered 429 with Retry-After before its body is read: other users
  are not refused for one user's greed.
- Pace: a body slower than BODY_MIN_RATE averaged over BODY_RATE_WINDOW (silence included) ends, so a
  trickling client holds nothing for long.

How a body ends badly is a BodyEnded subclass; what that means to the client (status, code, whether
the piece read so far is kept) is its protocol's business: `Body.partial` holds that piece."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import StreamReader
from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.http_exceptions import HttpProcessingError

from service.config import Settings
from service.errors import ServerBusy, TooManyUploads

# Memory a byte of a body costs while held: the piece, and the driver's encoded copy while it is stored.
COPIES = 2
# asyncio's transports read a socket at most 256 KiB at a time; a body lets its connection read up to
# this much at once. A tus-js-client PATCH of 1 GiB then takes 2,400 reads instead of 5,500, and the
# event loop thread 1.76 [1.60..1.95] CPU-s instead of 2.38 [1.89..2.80] (5 alternating runs).
RECV_SIZE = 1024 * 1024
# Seconds between two looks at a body's pace (and a finer grain only for windows below 4 s).
PACE_TICK = 1.0
_BROKEN = (OSError, HttpProcessingError, ClientPayloadError)


class BodyEnded(Exception):
    """The body ended before its end: `str()` says why, in words fit for a problem's detail."""


class BodyBroken(BodyEnded):
    """The connection broke or the body's framing is wrong: the client may be gone."""


class BodyDisconnected(BodyBroken):
    """The connection was lost mid-body (a browser's abort, a dead link): the client left."""


class BodyTooSlow(BodyEnded):
    """Slower than the minimum rate over the window."""


class BodyTooLong(BodyEnded):
    """More bytes than the caller allowed (max_bytes); the allowed ones are in `partial`."""


class BodyStopped(BodyEnded):
    """The caller's stop event was set while the body was being read (a takeover, a termination)."""


def _read_large(transport: asyncio.BaseTransport | None) -> None:
    # asyncio's selector transports have no public setting for it; another kind is left as it is.
    if transport is not None and isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = RECV_SIZE  # type: ignore[attr-defined]


class Hasher(Protocol):
    """hashlib's objects."""

    def update(self, data: Any, /) -> None: ...
    def digest(self) -> bytes: ...


@dataclass(frozen=True)
class Pace:
    min_rate: int  # bytes per second, averaged over the window; 0: no minimum
    window: float  # seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> Pace:
        return cls(settings.body_min_rate, settings.body_rate_window)


class _UserLoad:
    __slots__ = ("held", "requests")

    def __init__(self) -> None:
        self.requests, self.held = 0, 0


class BodyMemory:
    """What the bodies of one process hold, in total and per user. No lock: the event loop runs one task
    at a time and neither taking nor giving awaits in between, so a cancelled request can neither take
    room it never gives back nor leak what it holds (Share.close runs in its `finally`)."""

    def __init__(self, limit: int, user_bytes: int, user_requests: int, wait: float) -> None:
        self.limit, self.user_bytes, self.user_requests, self.wait = limit, user_bytes, user_requests, wait
        self.used = 0
        self.users: dict[str, _UserLoad] = {}
        self._freed = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyMemory:
        return cls(
            settings.chunk_memory,
            settings.user_inflight_bytes,
            settings.user_inflight_requests,
            wait=settings.db_pool_timeout_ms / 1000,
        )

    @contextlib.contextmanager
    def admit(self, user_id: str) -> Iterator[Share]:
        """One request's share; TooManyUploads at once when its user is at a bound already."""
        load = self.users.get(user_id) or _UserLoad()
        if load.requests >= self.user_requests or load.held >= self.user_bytes:
            raise TooManyUploads(
                f"{load.requests} of your upload requests are in flight holding {load.held} bytes "
                f"(at most {self.user_requests} requests and {self.user_bytes} bytes); retry shortly",
                headers={"Retry-After": "2"},
            )
        self.users[user_id] = load
        load.requests += 1
        share = Share(self, load)
        try:
            yield share
        finally:
            share.give(share.held)
            load.requests -= 1
            if load.requests == 0:
                self.users.pop(user_id, None)

    def _freed_some(self) -> None:
        self._freed.set()


class Share:
    """The memory one request's body holds."""

    def __init__(self, memory: BodyMemory, load: _UserLoad) -> None:
        self.memory, self.load, self.held = memory, load, 0

    def _fits(self, count: int) -> bool:
        m = self.memory
        # A request holding all that is in use (of the process, of its user) goes on: waiting would
        # never end, and a chunk larger than the whole budget still goes through alone.
        process_ok = m.used + count <= m.limit or m.used == self.held
        user_ok = self.load.held + count <= m.user_bytes or self.load.held == self.held
        return process_ok and user_ok

    async def take(self, count: int) -> float:
        """Takes `count` bytes of memory, waiting for room up to the memory's `wait` seconds; returns the
        seconds it waited. ServerBusy (503) or TooManyUploads (429, when the user's own bound is the
        one in the way) when no room came in time."""
        waited = 0.0
        if not self._fits(count):
            started = time.monotonic()
            m = self.memory
            try:
                async with asyncio.timeout(m.wait):
                    while not self._fits(count):
                        m._freed.clear()
                        await m._freed.wait()  # every give wakes every waiter; each checks again
            except TimeoutError:
                if self.load.held + count > m.user_bytes:
                    raise TooManyUploads(
                        f"your upload bodies hold {self.load.held} bytes (USER_INFLIGHT_BYTES is "
                        f"{m.user_bytes}); retry shortly",
                        headers={"Retry-After": "2"},
                    ) from None
                raise ServerBusy(
                    f"{m.used} bytes of upload bodies are in flight (CHUNK_MEMORY is {m.limit}); retry shortly",
                    headers={"Retry-After": "1"},
                ) from None
            waited = time.monotonic() - started
        self.held += count
        self.load.held += count
        self.memory.used += count
        return waited

    def give(self, count: int) -> None:
        count = min(count, self.held)
        if count:
            self.held -= count
            self.load.held -= count
            self.memory.used -= count
            self.memory._freed_some()


class _Rate:
    """The bytes received at each tick over the last window, on a clock that runs only while the body
    waits for its client (time spent waiting for memory or storing a piece is the server's, not the
    client's). Checked against the minimum once the body is one window old."""

    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self.samples: collections.deque[tuple[float, int]] = collections.deque([(0.0, 0)])

    def too_slow(self, now: float, received: int) -> bool:
        if not self.pace.min_rate:
            return False
        self.samples.append((now, received))
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.pace.window:
            self.samples.popleft()
        if now < self.pace.window:
            return False
        since, before = self.samples[0]
        return received - before < self.pace.min_rate * (now - since)


class Body:
    """One request body, read piece by piece. Use as `async with Body(...) as body:` (it watches the
    pace while open). Pieces are bytearrays whose memory stays taken until `release(piece)` or the end
    of the request's share; at most one socket read beyond the current piece is held besides."""

    def __init__(
        self,
        content: StreamReader,
        share: Share,
        pace: Pace,
        *,
        max_bytes: int,
        hasher: Hasher | None = None,
        stop: asyncio.Event | None = None,
        on_bytes: Callable[[], None] | None = None,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        """max_bytes: one byte more is BodyTooLong. hasher: updated with every byte, in order, as it arrives
        (only when the caller needs a digest). stop: ends the body with BodyStopped when set.
        on_bytes: called whenever bytes arrive (a lock holder's sign of life). transport: the request's
        connection, from then on read RECV_SIZE at a time."""
        _read_large(transport)
        self.content, self.share, self.max_bytes = content, share, max_bytes
        self.hasher, self.stop_event, self.on_bytes = hasher, stop, on_bytes
        self.received = 0  # bytes taken off the socket into pieces
        # The piece being read, as the socket delivered it, joined once it is whole. Growing one
        # bytearray instead moved it in memory again and again as other buffers took the room after it:
        # `piece += data` was 14 % of the event loop's samples with 4 native chunks in flight; joined,
        # the loop took 2.47 [2.35..3.19] CPU-s per GiB instead of 3.24 [3.14..3.25] (bench/chunkd_cpu.py).
        self._parts: list[bytes | bytearray | memoryview] = []
        self._held = 0  # bytes in _parts
        self._carry: memoryview | None = None  # socket bytes past the last piece's end
        self._rate = _Rate(pace)
        self._ending: BodyEnded | None = None
        self._reading: asyncio.Timeout | None = None
        self._read_started, self._waited = 0.0, 0.0
        self._watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Body:
        self._watch = asyncio.create_task(self._watchdog(), name="body watchdog")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    @property
    def partial(self) -> bytearray:
        """On BodyEnded: what arrived of the piece being read."""
        first = self._parts[0] if len(self._parts) == 1 else None
        if not isinstance(first, bytearray):
            first = bytearray().join(self._parts)
            self._parts = [first]
        return first

    async def read_piece(self, size: int) -> bytearray:
        """The next `size` bytes: fewer only at the end of the body, empty there."""
        while self._held < size:
            data = await self._next(size - self._held)
            if not data:
                break
            await self._add(data)
        piece = self.partial
        self._parts, self._held = [], 0
        return piece

    async def read_all(self) -> bytearray:
        """The whole body as one piece (max_bytes bounds it)."""
        return await self.read_piece(self.max_bytes + 1)

    def release(self, piece: bytearray | memoryview) -> None:
        """The piece is stored (or dropped): its memory goes back."""
        self.share.give(COPIES * len(piece))

    async def _add(self, data: bytes | memoryview) -> None:
        room = self.max_bytes - self.received
        over = len(data) > room
        if over:
            data = memoryview(data)[:room]
        await self.share.take(COPIES * len(data))
        self._parts.append(data)
        self._held += len(data)
        self.received += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        if over:
            raise BodyTooLong(f"the body is longer than the {self.max_bytes} bytes it may have")

    def _client_time(self) -> float:
        """Seconds this body has spent waiting for its client's bytes."""
        reading = time.monotonic() - self._read_started if self._reading is not None else 0.0
        return self._waited + reading

    async def _next(self, want: int) -> bytes | memoryview:
        """Up to `want` bytes as the socket delivered them (no joining copy); b"" at the end."""
        data: bytes | memoryview
        if self._carry is not None:
            data, self._carry = self._carry, None
        else:
            data = await self._read_socket()
            if self.on_bytes is not None and data:
                self.on_bytes()
        if len(data) > want:
            view = memoryview(data)
            data, self._carry = view[:want], view[want:]
        return data

    async def _read_socket(self) -> bytes:
        if self._ending is not None:
            raise self._ending
        self._read_started = time.monotonic()
        try:
            async with asyncio.timeout(None) as self._reading:
                piece, boundary = await self.content.readchunk()
                # The end of one HTTP chunk of a chunked body, not of the body (an empty body's reader
                # says "end of chunk" for ever: at_eof tells).
                while not piece and boundary and not self.content.at_eof():
                    piece, boundary = await self.content.readchunk()
            return piece
        except TimeoutError:
            if self._ending is None:
                raise
            raise self._ending from None
        except _BROKEN as e:
            await self._keep_leftover()
            ended = BodyDisconnected if isinstance(e, ConnectionError) else BodyBroken
            raise ended(f"the request body broke off ({type(e).__name__})") from None
        finally:
            self._reading = None
            self._waited += time.monotonic() - self._read_started

    async def _keep_leftover(self) -> None:
        """What arrived before the connection broke but was not read yet goes into `partial`. aiohttp
        makes every read raise once the connection is lost, buffer or not; its unchecked reader is the
        one way to keep those bytes. (No carry is pending here: it is used up before the socket is read.)"""
        try:
            leftover = self.content._read_nowait(-1)
        except Exception:  # an aiohttp without it: those few bytes are resent by the client
            return
        if leftover:
            with contextlib.suppress(BodyTooLong, ServerBusy, TooManyUploads):
                await self._add(leftover)

    def _end(self, ending: BodyEnded) -> None:
        self._ending = ending
        if self._reading is not None:
            self._reading.reschedule(asyncio.get_running_loop().time())

    async def _watchdog(self) -> None:
        tick = min(PACE_TICK, self._rate.pace.window / 4) if self._rate.pace.min_rate else PACE_TICK
        while True:
            if self.stop_event is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), tick)
                if self.stop_event.is_set():
                    return self._end(BodyStopped("the request was stopped"))
            else:
                await asyncio.sleep(tick)
            if self._rate.too_slow(self._client_time(), self.received):
                pace = self._rate.pace
                return self._end(
                    BodyTooSlow(f"the body arrived slower than {pace.min_rate} bytes/s over {pace.window:g} s")
                )
