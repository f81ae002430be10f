"""sessions: one row per login (device), the current refresh token's hash, revocation."""

from __future__ import annotations

import asyncpg

from service.models import Session, User
from service.store.rows import columns, row_to
from service.store.users import USER_COLUMNS, user_from

SESSION_COLUMNS = columns(Session)

# The per-request check of an access token: its user (u), if active and the session ($1) live. Also
# part of store.files.GET_SESSION_FILE, a status poll's one statement.
LIVE_SESSION_USER = """u.is_active
   AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = $1 AND s.user_id = u.id
                                          AND s.revoked_at IS NULL AND s.expires_at > now())"""
GET_SESSION_USER = f"""
SELECT {USER_COLUMNS} FROM users u
 WHERE u.id = $2 AND {LIVE_SESSION_USER}
"""


async def get_session_user(conn: asyncpg.Connection, session_id: str, user_id: str) -> User | None:
    row = await conn.fetchrow(GET_SESSION_USER, session_id, user_id)
    return None if row is None else user_from(row)


INSERT_SESSION = f"""
WITH new_session AS (
    INSERT INTO sessions (id, user_id, device, ip, refresh_hash, expires_at)
    SELECT $1, id, $3, $4, $5, now() + make_interval(secs => $6) FROM users WHERE id = $2 AND is_active
    RETURNING user_id
)
SELECT {USER_COLUMNS} FROM users WHERE id = (SELECT user_id FROM new_session)
"""


async def insert_session(
    conn: asyncpg.Connection, session_id: str, user_id: str, device: str, ip: str | None, refresh_digest: str, ttl: int
) -> User | None:
    """A new session for an active user; the user, or None when the user is gone or inactive."""
    row = await conn.fetchrow(INSERT_SESSION, session_id, user_id, device, ip, refresh_digest, float(ttl))
    return None if row is None else user_from(row)


ROTATE_REFRESH_TOKEN = f"""
WITH rotated AS (
    UPDATE sessions s SET refresh_hash = $3, last_used_at = now(), ip = coalesce($4, s.ip),
                          expires_at = now() + make_interval(secs => $5)
      FROM users u
     WHERE s.id = $1 AND s.refresh_hash = $2      -- guarded: of two refreshes with one token, one wins
       AND s.revoked_at IS NULL AND s.expires_at > now() AND u.id = s.user_id AND u.is_active
    RETURNING s.user_id
)
SELECT {USER_COLUMNS} FROM users WHERE id = (SELECT user_id FROM rotated)
"""


async def rotate_refresh_token(
    conn: asyncpg.Connection, session_id: str, old_digest: str, new_digest: str, ip: str | None, ttl: int
) -> User | None:
    row = await conn.fetchrow(ROTATE_REFRESH_TOKEN, session_id, old_digest, new_digest, ip, float(ttl))
    return None if row is None else user_from(row)


GET_SESSION = f"SELECT {SESSION_COLUMNS}, expires_at <= now() AS expired FROM sessions WHERE id = $1"


async def get_session(conn: asyncpg.Connection, session_id: str) -> tuple[Session, bool] | None:
    """The session and whether it has expired (by the database's clock), or None."""
    row = await conn.fetchrow(GET_SESSION, session_id)
    return None if row is None else (row_to(Session, row), row["expired"])


REVOKE_SESSION = """
UPDATE sessions SET revoked_at = now(), revoked_why = $3
 WHERE id = $1 AND ($2::text IS NULL OR user_id = $2) AND revoked_at IS NULL
RETURNING id
"""


async def revoke_session(conn: asyncpg.Connection, session_id: str, user_id: str | None, why: str) -> bool:
    """Ends one session (of `user_id` when given); False when there was no such live session."""
    return await conn.fetchval(REVOKE_SESSION, session_id, user_id, why) is not None


REVOKE_USER_SESSIONS = """
UPDATE sessions SET revoked_at = now(), revoked_why = $3
 WHERE user_id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR id <> $2)
"""


async def revoke_user_sessions(conn: asyncpg.Connection, user_id: str, why: str, *, keep: str | None = None) -> int:
    """Ends every live session of a user except `keep`; how many ended."""
    return int((await conn.execute(REVOKE_USER_SESSIONS, user_id, keep, why)).split()[-1])


LIST_SESSIONS = f"""
SELECT {SESSION_COLUMNS} FROM sessions
 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
 ORDER BY last_used_at DESC, id
"""


async def list_sessions(conn: asyncpg.Connection, user_id: str) -> list[Session]:
    return [row_to(Session, r) for r in await conn.fetch(LIST_SESSIONS, user_id)]
