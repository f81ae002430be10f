"""The one route table."""
from __future__ import annotations

from aiohttp import web

from service.handlers import health, tus

ROUTES: list[web.AbstractRouteDef] = [
    web.get("/healthz", health.get_healthz, allow_head=True),
    web.get("/readyz", health.get_readyz, allow_head=True),
    # tus: one route per resource, dispatched on the effective method (X-HTTP-Method-Override)
    web.route("*", "/api/tus", tus.dispatch_collection),
    web.route("*", "/api/tus/", tus.dispatch_collection),
    web.route("*", "/api/tus/{upload_id}", tus.dispatch_upload),
]
