"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from aiohttp import web

from service.db import DATABASE_DOWN, availability, unavailable
from service.errors import DatabaseUnavailable
from service.keys import pool_key, settings_key
from service.store import server


async def get_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def get_readyz(request: web.Request) -> web.Response:
    try:
        async with request.app[pool_key].acquire(timeout=5) as conn:
            await server.ping(conn, 5)
    except DATABASE_DOWN as e:
        unavailable(e, request.app[settings_key])
        raise DatabaseUnavailable(f"database check failed: {type(e).__name__}") from None
    availability(request.app[settings_key]).back()
    return web.json_response({"status": "ready"})
