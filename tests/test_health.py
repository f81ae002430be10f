"""/healthz answers while the process lives; /readyz follows the database down and back up."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from service.app import create_app
from service.embedded import EmbeddedPostgres, prepare_database
from tests.support import FAST, make_settings, scratch_dir


async def test_healthz_and_readyz(client) -> None:
    assert (await client.get("/healthz")).status == 200
    r = await client.get("/readyz")
    assert r.status == 200 and (await r.json()) == {"status": "ready"}


async def eventually(client, status: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get("/readyz")
        body = await r.json()
        if r.status == status or time.monotonic() > deadline:
            assert r.status == status, body
            return body
        await asyncio.sleep(0.1)


async def test_readyz_follows_a_database_restart(aiohttp_client, storage_dir: Path) -> None:
    base = scratch_dir("chunkd-test-restart-")
    pg = EmbeddedPostgres(base, server_options=FAST)
    pg.start()
    try:
        await prepare_database(pg, "chunkd")
        client = await aiohttp_client(create_app(make_settings(pg.url("chunkd"), storage_dir)))
        await eventually(client, 200)

        await asyncio.to_thread(pg.stop)
        body = await eventually(client, 503)
        assert body["code"] == "DATABASE_UNAVAILABLE"
        assert (await client.get("/healthz")).status == 200  # the process itself is fine

        await asyncio.to_thread(pg.start)
        await eventually(client, 200)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
