"""api_tokens: scripts' and servers' long-lived tokens, stored as SHA-256 only."""

from __future__ import annotations

import asyncpg

from service.models import ApiToken, User
from service.store.rows import columns, row_to

TOKEN_COLUMNS = columns(ApiToken)

# The per-request check of an API token ($1, its hash), with its user (also part of
# store.files.GET_TOKEN_FILE, a status poll's one statement); last_used_at is written at most once a
# minute per token, so a busy script does not turn every read into a row update.
TOKEN_CALLER = f"""
caller AS (
    SELECT {columns(ApiToken, "t", "t_")}, {columns(User, "u", "u_")}
      FROM api_tokens t JOIN users u ON u.id = t.user_id
     WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.is_active
), touched AS (
    UPDATE api_tokens SET last_used_at = now()
     WHERE id = (SELECT t_id FROM caller) AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
)"""
GET_TOKEN_USER = f"WITH {TOKEN_CALLER}\nSELECT * FROM caller"


async def get_token_user(conn: asyncpg.Connection, token_hash: str) -> tuple[ApiToken, User] | None:
    row = await conn.fetchrow(GET_TOKEN_USER, token_hash)
    return None if row is None else (row_to(ApiToken, row, "t_"), row_to(User, row, "u_"))


INSERT_TOKEN = f"""
INSERT INTO api_tokens (user_id, name, token_hash, scopes, expires_at)
VALUES ($1, $2, $3, $4, CASE WHEN $5::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $5) END)
RETURNING {TOKEN_COLUMNS}
"""


async def insert_token(
    conn: asyncpg.Connection, user_id: str, name: str, token_hash: str, scopes: list[str], expires_in: int | None
) -> ApiToken:
    row = await conn.fetchrow(
        INSERT_TOKEN, user_id, name, token_hash, scopes, None if expires_in is None else float(expires_in)
    )
    return row_to(ApiToken, row)


LIST_TOKENS = f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY created_at, id"


async def list_tokens(conn: asyncpg.Connection, user_id: str) -> list[ApiToken]:
    return [row_to(ApiToken, r) for r in await conn.fetch(LIST_TOKENS, user_id)]


DELETE_TOKEN = "DELETE FROM api_tokens WHERE id = $1 AND user_id = $2 RETURNING id"


async def delete_token(conn: asyncpg.Connection, token_id: str, user_id: str) -> bool:
    """Revokes one of the user's tokens; False for a missing one or anyone else's."""
    return await conn.fetchval(DELETE_TOKEN, token_id, user_id) is not None
