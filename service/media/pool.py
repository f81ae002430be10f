"""Decoders in child processes: the worker hands a file's path to a child (child.py) and gets its
analysis back, or the reason it has none. A file that hangs a decoder past PROCESSING_TIMEOUT, makes
it exceed PROCESSING_MEMORY or crashes it costs that child only: it is killed or reaped, a fresh one
takes its place, and the file is tried once more before it fails. Children start on demand, one per
file being analysed at once, and are reused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from service.config import MiB
from service.media.result import Analysis
from service.media.thumbnail import Thumbnail
from service.models import FileType
from service.outcomes import CorruptContent

log = logging.getLogger("service.media")

STARTUP_TIMEOUT = 60.0  # seconds for a child to import its libraries (a loaded machine is slow)
STOP_TIMEOUT = 5.0  # seconds a child gets to exit on its own before it is killed
FILES_PER_CHILD = 200  # then a fresh process: whatever a decoder leaked or fragmented is gone
MAX_REPLY = 16 * MiB  # a reply line (metadata) or a thumbnail larger than this is a broken child
ATTEMPTS = 2  # a hang or a crash is retried once in a fresh child, then the file fails


# All a child inherits of the environment: a decoder taken over by a file must not find DATABASE_URL,
# JWT_SECRET or any other secret there.
INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def child_environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env["MALLOC_ARENA_MAX"] = "2"  # glibc's arena per decoder thread would eat RLIMIT_AS
    return env


class DecoderFault(Exception):
    """The child died or hung on this file: retried once, then the file's fault."""


class Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.files = 0

    @classmethod
    async def start(cls, memory: int) -> Child:
        """A running child, or OSError: a child that cannot start is the environment's fault (no
        memory for a process, a broken installation), never the file's."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.media.child",
            str(memory),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=MAX_REPLY,
            start_new_session=True,  # a terminal's Ctrl-C is the worker's to handle, not the decoders'
            env=child_environment(),
        )
        child = cls(process)
        try:
            ready = await asyncio.wait_for(child._read_reply(), STARTUP_TIMEOUT)
        except (DecoderFault, TimeoutError) as e:
            await child.kill()
            raise OSError(f"the media decoder process did not start: {e or 'timed out'}") from None
        except BaseException:
            await child.kill()
            raise
        if ready.get("status") != "ready":
            await child.kill()
            raise OSError(f"the media decoder process did not start: {ready}")
        return child

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def analyse(self, path: Path) -> tuple[dict[str, Any], bytes]:
        assert self.process.stdin is not None
        self.files += 1
        self.process.stdin.write(json.dumps({"path": str(path)}).encode() + b"\n")
        try:
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise DecoderFault(await self._death()) from None
        reply = await self._read_reply()
        size = (reply.get("thumbnail") or {}).get("size", 0)
        if not isinstance(size, int) or not 0 <= size <= MAX_REPLY:
            raise DecoderFault(f"the decoder sent a thumbnail of {size!r} bytes")
        assert self.process.stdout is not None
        try:
            data = await self.process.stdout.readexactly(size)
        except asyncio.IncompleteReadError:
            raise DecoderFault(await self._death()) from None
        return reply, data

    async def _read_reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await self.process.stdout.readline()
        except ValueError:  # longer than MAX_REPLY
            raise DecoderFault("the decoder sent an oversized reply") from None
        if not line.endswith(b"\n"):
            raise DecoderFault(await self._death())
        try:
            reply = json.loads(line)
        except ValueError:
            raise DecoderFault("the decoder sent a reply that is not JSON") from None
        if not isinstance(reply, dict):
            raise DecoderFault("the decoder sent a reply that is not an object")
        return reply

    async def _death(self) -> str:
        """Why the child ended its replies: it exited (a signal, for a crash), said nothing more."""
        try:
            code = await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            await self.kill()
            return "the decoder stopped answering"
        if code < 0:
            return f"the decoder crashed ({signal.Signals(-code).name})"
        return f"the decoder exited with status {code}"

    async def stop(self) -> None:
        """Closing stdin ends the child's request loop; a child that does not exit is killed."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()
        await self.process.wait()


class DecoderPool:
    """At most `size` children; analyse() waits for one when all are busy."""

    def __init__(self, size: int, timeout: float, memory: int) -> None:
        self.timeout, self.memory = timeout, memory
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Child] = []
        self._busy: set[Child] = set()
        self._closed = False

    async def analyse(self, path: Path) -> Analysis:
        """The analysis of the file at path. Raises CorruptContent for the bytes' own faults (a decoder
        that hangs, crashes or runs out of memory on them included), OSError for the environment's."""
        async with self._slots:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    reply, data = await self._ask(path)
                except DecoderFault as e:
                    fault = str(e)
                    log.warning(
                        "decoding %s failed (attempt %d of %d): %s",
                        path.name,
                        attempt,
                        ATTEMPTS,
                        fault,
                        extra={"action": "decoder_fault", "attempt": attempt},
                    )
                    continue
                return self._outcome(reply, data)
            raise CorruptContent(f"{fault}, {ATTEMPTS} times")

    async def _ask(self, path: Path) -> tuple[dict[str, Any], bytes]:
        child = await self._take()
        try:
            reply, data = await asyncio.wait_for(child.analyse(path), self.timeout)
        except TimeoutError:
            await child.kill()
            raise DecoderFault(f"decoding took longer than PROCESSING_TIMEOUT ({self.timeout:g} s)") from None
        except BaseException:  # a fault, or the worker stopping: the child's state is unknown
            await child.kill()
            raise
        finally:
            self._busy.discard(child)
        if child.alive and child.files < FILES_PER_CHILD and reply.get("status") != "memory":
            self._idle.append(child)
        else:
            await child.stop()
        return reply, data

    async def _take(self) -> Child:
        if self._closed:
            raise OSError("the decoder pool is closed")  # the worker is stopping: the file goes back
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                self._busy.add(child)
                return child
            await child.kill()
        child = await Child.start(self.memory)
        self._busy.add(child)
        return child

    def _outcome(self, reply: dict[str, Any], data: bytes) -> Analysis:
        status = reply.get("status")
        if status == "ok":
            thumb = reply.get("thumbnail")
            thumbnail = None if thumb is None else Thumbnail(data, thumb["width"], thumb["height"], thumb["mimetype"])
            return Analysis(reply["mimetype"], FileType(reply["type"]), reply["metadata"], thumbnail)
        if status == "unreadable":
            raise CorruptContent(str(reply.get("reason")))
        if status == "memory":
            raise CorruptContent(f"decoding needs more memory than PROCESSING_MEMORY ({self.memory // MiB} MiB)")
        if status == "environment":  # with the child's errno: an EIO holds the file back as the worker's own would
            message, code = f"the decoder could not read the file: {reply.get('reason')}", reply.get("errno")
            raise OSError(code, message) if isinstance(code, int) else OSError(message)
        raise CorruptContent(f"the decoder failed: {reply.get('reason')}")

    async def close(self) -> None:
        """Stops the idle children and kills any still busy (their files go back to the queue)."""
        self._closed = True
        idle, self._idle = self._idle, []
        busy, self._busy = list(self._busy), set()
        await asyncio.gather(*(c.stop() for c in idle), *(c.kill() for c in busy))
