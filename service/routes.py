"""The one route table."""
from __future__ import annotations

from aiohttp import web

from service.handlers import admin, health, metrics

ROUTES: list[web.AbstractRouteDef] = [
    web.get("/healthz", health.get_healthz, allow_head=True),
    web.get("/readyz", health.get_readyz, allow_head=True),
    # admin and ops
    web.get("/api/admin/stats/files", admin.get_file_stats),
    web.get("/api/admin/stats/uploads/daily", admin.get_daily_upload_stats),
    web.get("/api/admin/db", admin.get_database_health),
    web.get("/metrics", metrics.get_metrics),
]
