"""server: the PostgreSQL server itself: liveness, version, settings, databases and extensions."""

from __future__ import annotations

import contextlib

import asyncpg

PING = "SELECT 1"


async def ping(conn: asyncpg.Connection, seconds: float) -> None:
    """A round trip: raises when the connection (or the server behind it) is gone."""
    await conn.fetchval(PING, timeout=seconds)


SERVER_VERSION = "SELECT current_setting('server_version'), current_setting('server_version_num')::int / 10000"


async def get_server_version(conn: asyncpg.Connection) -> tuple[str, int]:
    """The version as the server prints it (`15.8 (Debian 15.8-0+deb12u1)`) and its major number."""
    row = await conn.fetchrow(SERVER_VERSION)
    return row[0], row[1]


DATABASE_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)"


async def create_database_unless_exists(conn: asyncpg.Connection, name: str) -> None:
    """CREATE DATABASE unless it exists; two processes racing are both fine. `name` is ours, never a user's
    (CREATE DATABASE takes no parameters)."""
    if not await conn.fetchval(DATABASE_EXISTS, name):
        with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            await conn.execute(f'CREATE DATABASE "{name}"')


EXTENSION_VERSION = "SELECT extversion FROM pg_extension WHERE extname = $1"


async def get_extension_version(conn: asyncpg.Connection, name: str) -> str | None:
    """The installed version of an extension in this database; None when it is not installed."""
    return await conn.fetchval(EXTENSION_VERSION, name)


EXTENSION_AVAILABLE = "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1)"


async def get_extension_available(conn: asyncpg.Connection, name: str) -> bool:
    """The server ships it (CREATE EXTENSION would work, given shared_preload_libraries where needed)."""
    return await conn.fetchval(EXTENSION_AVAILABLE, name)


CREATE_STAT_STATEMENTS = "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"


async def create_stat_statements(conn: asyncpg.Connection) -> None:
    """pg_stat_statements feeds /api/admin/db; only where the server preloads it."""
    await conn.execute(CREATE_STAT_STATEMENTS)


SETTINGS = "SELECT name, setting, unit FROM pg_settings WHERE name = any($1::text[])"


async def list_settings(conn: asyncpg.Connection, names: list[str]) -> dict[str, tuple[str, str | None]]:
    """name -> (setting, unit) of the server's settings among `names` (pg_settings' own spelling)."""
    return {r["name"]: (r["setting"], r["unit"]) for r in await conn.fetch(SETTINGS, names)}
