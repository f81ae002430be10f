"""Every request is logged once; requests slower than SLOW_REQUEST_MS are warnings (the seed's interceptor)."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web

from service.app import create_app
from tests.support import make_settings


async def nap(request: web.Request) -> web.Response:
    await asyncio.sleep(0.05)
    return web.json_response({})


async def test_slow_requests_are_warned_about(aiohttp_client, database_url: str, storage_dir: Path,  # type: ignore[no-untyped-def]
                                              caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(make_settings(database_url, storage_dir, SLOW_REQUEST_MS="20"))
    app.router.add_get("/test/nap", nap)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.INFO, logger="service.http"):
        assert (await client.get("/test/nap")).status == 200
        assert (await client.get("/healthz")).status == 200
    slow = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.action, r.path, r.status) for r in slow] == [("slow_request", "/test/nap", 200)]  # type: ignore[attr-defined]
    fast = [r for r in caplog.records if r.levelno == logging.INFO and r.path == "/healthz"]  # type: ignore[attr-defined]
    assert len(fast) == 1 and fast[0].status == 200  # type: ignore[attr-defined]
