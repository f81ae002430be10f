"""The one route table."""
from __future__ import annotations

from aiohttp import web

from service.handlers import health

ROUTES: list[web.AbstractRouteDef] = [
    web.get("/healthz", health.get_healthz, allow_head=True),
    web.get("/readyz", health.get_readyz, allow_head=True),
]
