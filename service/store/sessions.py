"""sessions: one row per login (device), the current refresh token's hash, revocation."""
from __future__ import annotations

import asyncpg

from service.store.users import USER_COLUMNS

# The per-request check of an access token: its session and its user, in one statement.
LOAD_SESSION_CALLER = """
SELECT u.id, u.email, u.role FROM sessions s JOIN users u ON u.id = s.user_id
 WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > now() AND u.is_active
"""


async def load_session_caller(conn: asyncpg.Connection, session_id: str, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(LOAD_SESSION_CALLER, session_id, user_id)


INSERT_SESSION = f"""
WITH new_session AS (
    INSERT INTO sessions (id, user_id, device, ip, refresh_hash, expires_at)
    SELECT $1, id, $3, $4, $5, now() + make_interval(secs => $6) FROM users WHERE id = $2 AND is_active
    RETURNING user_id
)
SELECT {USER_COLUMNS} FROM users WHERE id = (SELECT user_id FROM new_session)
"""


async def insert_session(conn: asyncpg.Connection, session_id: str, user_id: str, device: str, ip: str | None,
                         refresh_digest: str, ttl: int) -> asyncpg.Record | None:
    """A new session for an active user; its user row, or None when the user is gone or inactive."""
    return await conn.fetchrow(INSERT_SESSION, session_id, user_id, device, ip, refresh_digest, float(ttl))


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


async def rotate_refresh_token(conn: asyncpg.Connection, session_id: str, old_digest: str, new_digest: str,
                               ip: str | None, ttl: int) -> asyncpg.Record | None:
    return await conn.fetchrow(ROTATE_REFRESH_TOKEN, session_id, old_digest, new_digest, ip, float(ttl))


FETCH_SESSION_STATE = """
SELECT s.user_id, s.revoked_at IS NOT NULL AS revoked, s.revoked_why, s.expires_at <= now() AS expired, u.is_active
  FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1
"""


async def fetch_session_state(conn: asyncpg.Connection, session_id: str) -> asyncpg.Record | None:
    """Why a refresh failed: the session's revocation, expiry and its user's state."""
    return await conn.fetchrow(FETCH_SESSION_STATE, session_id)


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


LIST_SESSIONS = """
SELECT id, device, ip, created_at, last_used_at, expires_at FROM sessions
 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
 ORDER BY last_used_at DESC, id
"""


async def list_sessions(conn: asyncpg.Connection, user_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(LIST_SESSIONS, user_id)
