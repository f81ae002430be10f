"""Every request is logged once; requests slower than SLOW_REQUEST_MS are warnings (the seed's interceptor)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from aiohttp import web

from service.app import create_app
from tests.support import make_settings, scrape
from tests.uploading import create, raw_put


async def nap(request: web.Request) -> web.Response:
    await asyncio.sleep(0.05)
    return web.json_response({})


async def test_slow_requests_are_warned_about(
    aiohttp_client,
    database_url: str,
    storage_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
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


async def test_a_request_the_parser_refuses_is_one_warning_and_counted(
    client, caplog: pytest.LogCaptureFixture
) -> None:
    before = (await scrape(client)).get(
        ("chunkd_http_requests_total", (("method", "OTHER"), ("route", "unmatched"), ("status", "400"))), 0
    )
    with caplog.at_level(logging.DEBUG):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Evil: a\x00b\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        await asyncio.sleep(0.1)
    assert status_line.split()[1] == b"400"
    refused = [r for r in caplog.records if getattr(r, "action", None) == "request_refused"]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING and refused[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    after = (await scrape(client))[
        ("chunkd_http_requests_total", (("method", "OTHER"), ("route", "unmatched"), ("status", "400")))
    ]
    assert after == before + 1


async def test_a_client_that_goes_away_mid_body_is_one_info_line_and_499(
    client, user, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(256 * 1024)
    upload = await create(client, user, data, chunk_size=len(data))
    with caplog.at_level(logging.DEBUG):
        async with raw_put(client, user, upload["id"], 0, len(data)) as put:
            await put.send(data[:1000])
            await asyncio.sleep(0.3)
        for _ in range(50):
            lines = [
                r
                for r in caplog.records
                if getattr(r, "action", None) == "request" and getattr(r, "method", "") == "PUT"
            ]
            if lines:
                break
            await asyncio.sleep(0.1)
    assert [(r.levelno, getattr(r, "status", None)) for r in lines] == [(logging.INFO, 499)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    samples = await scrape(client)
    assert (
        samples[
            (
                "chunkd_http_requests_total",
                (("method", "PUT"), ("route", "/api/uploads/{id}/chunks/{index}"), ("status", "499")),
            )
        ]
        >= 1
    )
