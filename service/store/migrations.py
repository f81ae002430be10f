"""migrations: the schema_migrations history and the lock that serialises deploys (service.migrate
reads the files and decides what to apply)."""

from __future__ import annotations

import asyncpg

LOCK_KEY = 0x6368756E6B64  # "chunkd": pg_advisory_lock key for deploys

CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
LIST_APPLIED = "SELECT version, checksum FROM schema_migrations"


async def list_applied(conn: asyncpg.Connection) -> dict[str, str]:
    """version -> checksum of every migration applied (the history table is made on first use)."""
    await conn.execute(CREATE_HISTORY)
    return {r["version"]: r["checksum"] for r in await conn.fetch(LIST_APPLIED)}


INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"


async def insert_applied(conn: asyncpg.Connection, version: str, name: str, checksum: str) -> None:
    await conn.execute(INSERT_APPLIED, version, name, checksum)


LOCK = "SELECT pg_advisory_lock($1)"


async def lock(conn: asyncpg.Connection) -> None:
    """Waits for any other deploy; held by the session until unlock()."""
    await conn.execute(LOCK, LOCK_KEY)


UNLOCK = "SELECT pg_advisory_unlock($1)"


async def unlock(conn: asyncpg.Connection) -> None:
    await conn.execute(UNLOCK, LOCK_KEY)


DROP_PUBLIC_SCHEMA = "DROP SCHEMA public CASCADE; CREATE SCHEMA public"


async def drop_public_schema(conn: asyncpg.Connection) -> None:
    """`migrate reset`: every table and its data."""
    await conn.execute(DROP_PUBLIC_SCHEMA)
