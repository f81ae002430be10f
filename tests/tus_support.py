"""Helpers of the tus tests: headers, creating uploads, and reading an upload's bytes back from its rows."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from pathlib import Path

import asyncpg
import pytest

from service.app import create_app
from service.keys import tus_locks_key
from tests.support import make_settings

TUS = {"Tus-Resumable": "1.0.0"}
STREAM = {"Content-Type": "application/offset+octet-stream"}


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {b64(v)}" for k, v in pairs.items())


def upload_path(location: str) -> str:
    return "/api/tus/" + location.rstrip("/").rsplit("/", 1)[-1]


def upload_id(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


async def create(client, user, length: int | None = None, **headers: str) -> str:  # type: ignore[no-untyped-def]
    """POST /api/tus/ -> the new upload's path."""
    sizing = {"Upload-Length": str(length)} if length is not None else {}
    r = await client.post("/api/tus/", headers={**user.headers, **TUS, **sizing, **headers})
    assert r.status == 201, await r.text()
    return upload_path(r.headers["Location"])


async def patch(client, user, path: str, offset: int, body: bytes, **headers: str):  # type: ignore[no-untyped-def]
    return await client.patch(path, data=body,
                              headers={**user.headers, **TUS, **STREAM, "Upload-Offset": str(offset), **headers})


async def stored_bytes(conn: asyncpg.Connection, file_id: str) -> bytes:
    """The upload as the worker will assemble it: chunk rows in chunk_index order."""
    rows = await conn.fetch("SELECT chunk_index, data FROM file_chunks WHERE file_id = $1 ORDER BY chunk_index",
                            file_id)
    assert [r["chunk_index"] for r in rows] == list(range(len(rows))), "chunk_index must be 0, 1, 2, ..."
    return b"".join(r["data"] for r in rows)


async def file_row(conn: asyncpg.Connection, file_id: str) -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM files WHERE id = $1", file_id)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CHUNK = 64 * 1024           # DEFAULT_CHUNK_SIZE of the tus test app: bodies span many rows
MAX_SIZE = 4 * 1024 * 1024  # its MAX_UPLOAD_SIZE


@pytest.fixture
async def tus(aiohttp_client, database_url: str, storage_dir: Path):  # type: ignore[no-untyped-def]
    """The app with small chunks and a small Tus-Max-Size, and takeover timings short enough for tests."""
    return await tus_app(aiohttp_client, database_url, storage_dir)


async def tus_app(aiohttp_client, database_url: str, storage_dir: Path, **env: str):  # type: ignore[no-untyped-def]
    """The `tus` fixture's app, with more settings of the test's own."""
    settings = make_settings(database_url, storage_dir, DEFAULT_CHUNK_SIZE=str(CHUNK), MAX_UPLOAD_SIZE=str(MAX_SIZE),
                             CORS_ORIGINS="https://app.example", **env)
    client = await aiohttp_client(create_app(settings))
    locks = client.server.app[tus_locks_key]
    locks.stall_after, locks.lock_wait, locks.nudge_every = 0.3, 1.5, 0.05
    return client


class RawRequest:
    """An HTTP/1.1 request over a plain socket, so a test can send part of a body, stall or hang up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server, method: str, path: str, headers: dict[str, str]) -> RawRequest:  # type: ignore[no-untyped-def]
        """`server`: the test client of an in-process app, or a ChunkdProcess."""
        host, port = (server.server.host, server.server.port) if hasattr(server, "server") else ("127.0.0.1", server.port)
        reader, writer = await asyncio.open_connection(host, port)
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        writer.write(f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode())
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 10) -> tuple[int, dict[str, str]]:
        status_line = await asyncio.wait_for(self.reader.readline(), timeout)
        headers = {}
        while (line := await asyncio.wait_for(self.reader.readline(), timeout)) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def raw_patch(server, user, path: str, offset: int, length: int, **headers: str) -> RawRequest:  # type: ignore[no-untyped-def]
    """A PATCH announcing `length` bytes of body and sending none yet."""
    return await RawRequest.open(server, "PATCH", path, {**user.headers, **TUS, **STREAM, **headers,
                                                         "Upload-Offset": str(offset), "Content-Length": str(length)})


async def unlocked(conn, file_id: str) -> bool:  # type: ignore[no-untyped-def]
    """No request holds the upload's advisory lock."""
    return not await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = hashtext($1)::oid", file_id)


async def until(check, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
