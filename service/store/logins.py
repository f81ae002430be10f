"""login_failures: failed logins per key (`email:...`, `ip:...`) over a sliding window. An attempt is
recorded before its password is checked and forgiven when it succeeds: concurrent attempts then see
each other, and a burst cannot slip past the limit by all counting before any failed."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

DELETE_OLD_FAILURES = """
DELETE FROM login_failures WHERE key = any($1::text[]) AND failed_at <= now() - make_interval(secs => $2)
"""
INSERT_ATTEMPTS = "INSERT INTO login_failures (key) SELECT unnest($1::text[]) RETURNING id"
COUNT_FAILURES = """
SELECT count(*) AS failures,
       ceil(extract(epoch FROM min(failed_at) + make_interval(secs => $2) - now()))::int AS retry_after
  FROM login_failures
 WHERE key = any($1::text[]) AND failed_at > now() - make_interval(secs => $2)
 GROUP BY key
"""


@dataclass(frozen=True)
class Attempt:
    ids: list[int]
    failures: int  # the most of any key, this attempt included
    retry_after: int  # seconds until that key's oldest failure leaves the window


async def insert_attempt(conn: asyncpg.Connection, keys: list[str], window: int) -> Attempt:
    """Records an attempt under each key (committed at once, so others see it), then counts."""
    await conn.execute(DELETE_OLD_FAILURES, keys, float(window))
    ids = [r["id"] for r in await conn.fetch(INSERT_ATTEMPTS, keys)]
    rows = await conn.fetch(COUNT_FAILURES, keys, float(window))
    worst = max(rows, key=lambda r: r["failures"])
    return Attempt(ids, worst["failures"], max(worst["retry_after"], 1))


DELETE_ATTEMPTS = "DELETE FROM login_failures WHERE id = any($1::bigint[])"


async def delete_attempt(conn: asyncpg.Connection, attempt: Attempt) -> None:
    """A refused (throttled) or successful attempt is not a failure."""
    await conn.execute(DELETE_ATTEMPTS, attempt.ids)


DELETE_FAILURES = "DELETE FROM login_failures WHERE key = $1"


async def delete_failures(conn: asyncpg.Connection, key: str) -> None:
    """A successful login forgives the account's failures (not the address's)."""
    await conn.execute(DELETE_FAILURES, key)
