"""login_failures: failed logins per key (`email:...`, `ip:...`) over a sliding window."""
from __future__ import annotations

import asyncpg

COUNT_FAILURES = """
SELECT key, count(*) AS failures,
       ceil(extract(epoch FROM min(failed_at) + make_interval(secs => $2) - now()))::int AS retry_after
  FROM login_failures
 WHERE key = any($1::text[]) AND failed_at > now() - make_interval(secs => $2)
 GROUP BY key
"""


async def count_failures(conn: asyncpg.Connection, keys: list[str], window: int) -> dict[str, tuple[int, int]]:
    """key -> (failures within the window, seconds until the oldest of them leaves it)."""
    rows = await conn.fetch(COUNT_FAILURES, keys, float(window))
    return {r["key"]: (r["failures"], max(r["retry_after"], 1)) for r in rows}


INSERT_FAILURES = "INSERT INTO login_failures (key) SELECT unnest($1::text[])"
DELETE_OLD_FAILURES = "DELETE FROM login_failures WHERE key = any($1::text[]) AND failed_at <= now() - make_interval(secs => $2)"


async def insert_failures(conn: asyncpg.Connection, keys: list[str], window: int) -> None:
    """One failure for each key; the keys' rows that left the window go at the same time."""
    async with conn.transaction():
        await conn.execute(DELETE_OLD_FAILURES, keys, float(window))
        await conn.execute(INSERT_FAILURES, keys)


DELETE_FAILURES = "DELETE FROM login_failures WHERE key = $1"


async def delete_failures(conn: asyncpg.Connection, key: str) -> None:
    """A successful login forgives the account's failures (not the address's)."""
    await conn.execute(DELETE_FAILURES, key)
