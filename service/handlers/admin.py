"""Admin statistics and database health. Admins only: everyone else gets 403."""

from __future__ import annotations

from aiohttp import web

from service.auth import require_admin
from service.db import Pool
from service.keys import pool_key
from service.store import stats
from service.validation import query_int

DAILY_DAYS_DEFAULT, DAILY_DAYS_MAX = 30, 366


async def get_file_stats(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await stats.list_file_statistics(conn))


async def get_daily_upload_stats(request: web.Request) -> web.Response:
    require_admin(request)
    days = query_int(request, "days", DAILY_DAYS_DEFAULT, 1, DAILY_DAYS_MAX)
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await stats.list_daily_uploads(conn, days))


async def get_queue_stats(request: web.Request) -> web.Response:
    """Files waiting for a worker, files a worker is processing now (all processes), and of all these those
    that their environment holds back (a full disk, say: retried until it passes)."""
    require_admin(request)
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await stats.get_queue_depth(conn))


SLOWEST_STATEMENTS = 10


async def get_database_health(request: web.Request) -> web.Response:
    require_admin(request)
    pool = request.app[pool_key]
    async with pool.acquire() as conn:
        statements, reason = await stats.list_slowest_statements(conn, SLOWEST_STATEMENTS)
        body = {
            "connections": await stats.get_connection_counts(conn),
            "pool": pool_state(pool),
            "database": await stats.get_database_size(conn),
            "tables": await stats.list_table_sizes(conn),
            "indexes": await stats.list_index_usage(conn),
            "pg_stat_statements": statements,
            "pg_stat_statements_reason": reason,
        }
    return web.json_response(body)


def pool_state(pool: Pool) -> dict[str, int]:
    """This process's pool; `waiting` counts acquires in progress (see db.Pool)."""
    size, free = pool.get_size(), pool.get_idle_size()
    return {
        "size": size,
        "free": free,
        "in_use": size - free,
        "min": pool.get_min_size(),
        "max": pool.get_max_size(),
        "waiting": pool.waiting,
    }
