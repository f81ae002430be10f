"""users: SQL and the functions that run it."""
from __future__ import annotations

import asyncpg

UPSERT_USER = """
INSERT INTO users (email, password, name, role) VALUES ($1, $2, $3, $4)
ON CONFLICT (email) DO NOTHING                              -- seeding twice changes nothing
RETURNING id
"""


async def upsert_user(conn: asyncpg.Connection, email: str, password_hash: str, name: str, role: str) -> str:
    """The seed's upsert with `update: {}`: an existing user is left as it is. Returns the id."""
    user_id = await conn.fetchval(UPSERT_USER, email, password_hash, name, role)
    return user_id or await conn.fetchval("SELECT id FROM users WHERE email = $1", email)


INSERT_MISSING_PREFERENCES = """
INSERT INTO user_preferences (user_id)
SELECT u.id FROM users u WHERE NOT EXISTS (SELECT 1 FROM user_preferences p WHERE p.user_id = u.id)
"""


async def insert_missing_preferences(conn: asyncpg.Connection) -> int:
    """The seed's migrateUserPreferences: default preferences for every user who has none."""
    return int((await conn.execute(INSERT_MISSING_PREFERENCES)).split()[-1])
