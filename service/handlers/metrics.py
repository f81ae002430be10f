"""GET /metrics: Prometheus text format. Outside /api, so it needs no token: firewall it like any
metrics port."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from service import metrics
from service.db import DATABASE_DOWN
from service.keys import body_memory_key, pool_key
from service.outcomes import BLOCKED_REASONS
from service.store import stats

log = logging.getLogger(__name__)

SCRAPE_DB_TIMEOUT = 2  # seconds; a scrape must not hang on a sick database


async def get_metrics(request: web.Request) -> web.Response:
    pool = request.app[pool_key]
    size, free = pool.get_size(), pool.get_idle_size()
    for state, value in (("in_use", size - free), ("idle", free), ("max", pool.get_max_size())):
        metrics.POOL_CONNECTIONS.labels(state).set(value)
    metrics.POOL_WAITING.set(pool.waiting)
    memory = request.app[body_memory_key]
    metrics.CHUNK_MEMORY.labels("used").set(memory.used)
    metrics.CHUNK_MEMORY.labels("max").set(memory.limit)
    try:
        async with pool.acquire(timeout=SCRAPE_DB_TIMEOUT) as conn:
            depth: dict[str, float] = dict(await stats.get_queue_depth(conn))
            blocked: dict[str, float] = dict.fromkeys(BLOCKED_REASONS, 0)
            blocked.update(await stats.get_processing_blocked(conn))
    except DATABASE_DOWN as e:
        log.warning("metrics: queue depth unavailable: %s", e, extra={"action": "metrics_db_unavailable"})
        depth = {"waiting": float("nan"), "claimed": float("nan")}
        blocked = {reason: float("nan") for reason in BLOCKED_REASONS}
    for state in ("waiting", "claimed"):  # the blocked ones have a gauge of their own, by reason
        metrics.QUEUE_DEPTH.labels(state).set(depth[state])
    for reason, value in blocked.items():
        metrics.PROCESSING_BLOCKED.labels(reason).set(value)
    # Prometheus asks for OpenMetrics in Accept; anything else gets the classic text format 0.0.4.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(REGISTRY), headers={"Content-Type": content_type})
