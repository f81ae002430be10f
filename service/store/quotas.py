"""Storage quotas: what a user stores, and the one check every upload creation goes through."""

from __future__ import annotations

import asyncpg

from service.errors import QuotaExceeded

# Stored bytes plus the declared sizes of unfinished uploads: every file but FAILED ones, whose blobs
# are removed. A deferred-length tus upload counts 0 until its length is declared.
USAGE = "SELECT coalesce(sum(size), 0)::bigint FROM files WHERE uploaded_by_id = $1 AND status <> 'FAILED'"


async def get_usage(conn: asyncpg.Connection, user_id: str) -> int:
    return await conn.fetchval(USAGE, user_id)


# NO KEY UPDATE: creations of one user's uploads take turns (two cannot both fit in the last bytes),
# while foreign keys to the user row (FOR KEY SHARE) are not held up.
LOCK_QUOTA = "SELECT quota_bytes FROM users WHERE id = $1 FOR NO KEY UPDATE"


async def check_quota(conn: asyncpg.Connection, user_id: str, adding: int, default_quota: int | None) -> None:
    """Raises QuotaExceeded (413, with the numbers) when `adding` more bytes would take the user past
    their quota (users.quota_bytes, else USER_QUOTA; None: unlimited). Call it inside the transaction
    that creates the upload: the row lock is held until that commits. Native, tus and RUFH creation
    (and a tus upload declaring its deferred length) all come here."""
    if not conn.is_in_transaction():
        raise RuntimeError("check_quota must run inside the creating transaction")
    quota = await conn.fetchval(LOCK_QUOTA, user_id)
    if quota is None:
        quota = default_quota
    if quota is None:
        return
    used = await get_usage(conn, user_id)
    if used + adding > quota:
        raise QuotaExceeded(
            f"{adding} more bytes would make {used + adding}; the quota is {quota} bytes ({used} used)",
            quota_bytes=quota,
            usage_bytes=used,
            requested_bytes=adding,
        )
