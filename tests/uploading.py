"""Helpers of the upload and file tests: a client of the native protocol, test images, waiting."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import time
from typing import Any

import asyncpg
from PIL import Image

from tests.support import RawRequest

KiB = 1024
# Small chunks keep the tests fast while still giving every file many of them.
UPLOAD_ENV = {"DEFAULT_CHUNK_SIZE": "64KiB", "MAX_CHUNK_SIZE": "1MiB", "WORKER_LEASE": "3s"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def noise_png(width: int, height: int) -> bytes:
    """Random pixels: incompressible, so the PNG is about 3 bytes per pixel."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


async def create(client: Any, user: Any, data: bytes, filename: str = "file.bin", **fields: Any) -> dict:
    r = await client.post(
        "/api/uploads", json={"filename": filename, "size": len(data), **fields}, headers=user.headers
    )
    assert r.status == 201, await r.text()
    return await r.json()


async def put_chunks(
    client: Any,
    user: Any,
    upload: dict,
    data: bytes,
    indexes: list[int] | None = None,
    parallel: int = 4,
    checksum: bool = True,
) -> None:
    """PUTs chunks `indexes` (all, shuffled, by default) with `parallel` requests in flight."""
    size = upload["chunk_size"]
    if indexes is None:
        indexes = list(range(upload["total_chunks"]))
        random.shuffle(indexes)
    queue = list(indexes)

    async def sender() -> None:
        while queue:
            i = queue.pop()
            body = data[i * size : (i + 1) * size]
            headers = {**user.headers, **({"Content-SHA256": sha256(body)} if checksum else {})}
            r = await client.put(f"/api/uploads/{upload['id']}/chunks/{i}", data=body, headers=headers)
            assert r.status == 201, await r.text()

    await asyncio.gather(*(sender() for _ in range(parallel)))


async def upload(client: Any, user: Any, data: bytes, filename: str = "file.bin", **fields: Any) -> str:
    """A whole native upload, completed; returns the file id."""
    created = await create(client, user, data, filename, **fields)
    await put_chunks(client, user, created, data)
    r = await client.post(f"/api/uploads/{created['id']}/complete", headers=user.headers)
    assert r.status == 202, await r.text()
    return created["id"]


async def wait_for_status(
    client: Any, user: Any, file_id: str, statuses: tuple[str, ...] = ("COMPLETED", "FAILED"), timeout: float = 30
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"/api/files/{file_id}", params={"wait": "5"}, headers=user.headers)
        assert r.status == 200, await r.text()
        body = await r.json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"file still {body['status']} after {timeout}s"


async def stored(conn: asyncpg.Connection, file_id: str) -> list[tuple[int, str]]:
    rows = await conn.fetch(
        "SELECT chunk_index, encode(sha256(data), 'hex') FROM file_chunks WHERE file_id = $1 ORDER BY chunk_index",
        file_id,
    )
    return [tuple(r) for r in rows]


def raw_put(client: Any, user: Any, file_id: str, index: int, length: int, **headers: str) -> RawRequest:
    """A chunk PUT written by hand (`async with raw_put(...) as put:`), to control when each byte leaves."""
    return RawRequest(
        client,
        "PUT",
        f"/api/uploads/{file_id}/chunks/{index}",
        {
            "Connection": "close",
            **user.headers,
            "Content-Length": str(length),
            **{k.replace("_", "-"): v for k, v in headers.items()},
        },
    )
