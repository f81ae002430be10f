"""Helpers of the tus tests: headers, creating uploads, and reading an upload's bytes back from its rows."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from pathlib import Path

import asyncpg

from service.config import Settings
from tests.support import RawRequest, make_settings

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


async def create(client, user, length: int | None = None, **headers: str) -> str:
    """POST /api/tus/ -> the new upload's path."""
    sizing = {"Upload-Length": str(length)} if length is not None else {}
    r = await client.post("/api/tus/", headers={**user.headers, **TUS, **sizing, **headers})
    assert r.status == 201, await r.text()
    return upload_path(r.headers["Location"])


async def patch(client, user, path: str, offset: int, body: bytes, **headers: str):
    return await client.patch(
        path, data=body, headers={**user.headers, **TUS, **STREAM, "Upload-Offset": str(offset), **headers}
    )


async def stored_bytes(conn: asyncpg.Connection, file_id: str) -> bytes:
    """The upload as the worker will assemble it: chunk rows in chunk_index order."""
    rows = await conn.fetch(
        "SELECT chunk_index, data FROM file_chunks WHERE file_id = $1 ORDER BY chunk_index", file_id
    )
    assert [r["chunk_index"] for r in rows] == list(range(len(rows))), "chunk_index must be 0, 1, 2, ..."
    return b"".join(r["data"] for r in rows)


async def file_row(conn: asyncpg.Connection, file_id: str) -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM files WHERE id = $1", file_id)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CHUNK = 64 * 1024  # DEFAULT_CHUNK_SIZE of the tus test app: bodies span many rows
MAX_SIZE = 4 * 1024 * 1024  # its MAX_UPLOAD_SIZE


def protocol_settings(database_url: str, storage_dir: Path, **env: str) -> Settings:
    """The settings of the tus and IETF draft test apps: small chunks, a small maximum, one CORS origin."""
    return make_settings(
        database_url,
        storage_dir,
        DEFAULT_CHUNK_SIZE=str(CHUNK),
        MAX_UPLOAD_SIZE=str(MAX_SIZE),
        CORS_ORIGINS="https://app.example",
        **env,
    )


async def raw_patch(server, user, path: str, offset: int, length: int, **headers: str) -> RawRequest:
    """A PATCH announcing `length` bytes of body and sending none yet."""
    return await RawRequest.open(
        server,
        "PATCH",
        path,
        {**user.headers, **TUS, **STREAM, **headers, "Upload-Offset": str(offset), "Content-Length": str(length)},
    )


async def unlocked(conn, file_id: str) -> bool:
    """No request holds the upload's advisory lock."""
    return not await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = hashtext($1)::oid", file_id
    )


async def until(check, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
