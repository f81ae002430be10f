"""users: SQL and the functions that run it."""
from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg

from service.errors import EmailTaken, UserNotFound
from service.models import User

UPSERT_USER = """
INSERT INTO users (email, password, name, role) VALUES ($1, $2, $3, $4)
ON CONFLICT (email) DO NOTHING                              -- seeding twice changes nothing
RETURNING id
"""
GET_USER_ID = "SELECT id FROM users WHERE email = $1"


async def upsert_user(conn: asyncpg.Connection, email: str, password_hash: str, name: str, role: str) -> str:
    """The seed's upsert with `update: {}`: an existing user is left as it is. Returns the id."""
    user_id = await conn.fetchval(UPSERT_USER, email, password_hash, name, role)
    return user_id or await conn.fetchval(GET_USER_ID, email)



INSERT_MISSING_PREFERENCES = """
INSERT INTO user_preferences (user_id)
SELECT u.id FROM users u WHERE NOT EXISTS (SELECT 1 FROM user_preferences p WHERE p.user_id = u.id)
"""


async def insert_missing_preferences(conn: asyncpg.Connection) -> int:
    """The seed's migrateUserPreferences: default preferences for every user who has none."""
    return int((await conn.execute(INSERT_MISSING_PREFERENCES)).split()[-1])


# The public shape of a user (models.User): never the password hash or the refresh-token digest.
USER_COLUMNS = ", ".join(f.name for f in dataclasses.fields(User))


def user_from(row: asyncpg.Record) -> User:
    return User(**{f.name: row[f.name] for f in dataclasses.fields(User)})

INSERT_USER = f"""
WITH new_user AS (
    INSERT INTO users (email, password, name) VALUES ($1, $2, $3)
    RETURNING {USER_COLUMNS}
), preferences AS (                                         -- the 0002 data migration's rule, for new users
    INSERT INTO user_preferences (user_id) SELECT id FROM new_user
)
SELECT * FROM new_user
"""


async def insert_user(conn: asyncpg.Connection, email: str, password_hash: str, name: str | None) -> User:
    try:
        return user_from(await conn.fetchrow(INSERT_USER, email, password_hash, name))
    except asyncpg.UniqueViolationError:
        raise EmailTaken(f"{email} is already registered") from None


GET_CREDENTIALS = f"SELECT {USER_COLUMNS}, password FROM users WHERE email = $1"


async def get_credentials(conn: asyncpg.Connection, email: str) -> tuple[User, str] | None:
    """The user of this email and its password hash, for login only."""
    row = await conn.fetchrow(GET_CREDENTIALS, email)
    return None if row is None else (user_from(row), row["password"])


SET_REFRESH_TOKEN = f"""
UPDATE users SET refresh_token = $2 WHERE id = $1 AND is_active
RETURNING {USER_COLUMNS}
"""


async def set_refresh_token(conn: asyncpg.Connection, user_id: str, digest: str) -> User | None:
    """A new session for an active user (login, register); None when the user is gone or inactive."""
    row = await conn.fetchrow(SET_REFRESH_TOKEN, user_id, digest)
    return None if row is None else user_from(row)


ROTATE_REFRESH_TOKEN = f"""
UPDATE users SET refresh_token = $3
 WHERE id = $1 AND refresh_token = $2 AND is_active       -- guarded: of two refreshes with one token, one wins
RETURNING {USER_COLUMNS}
"""


async def rotate_refresh_token(conn: asyncpg.Connection, user_id: str, old_digest: str,
                               new_digest: str) -> User | None:
    row = await conn.fetchrow(ROTATE_REFRESH_TOKEN, user_id, old_digest, new_digest)
    return None if row is None else user_from(row)


GET_IS_ACTIVE = "SELECT is_active FROM users WHERE id = $1"


async def get_is_active(conn: asyncpg.Connection, user_id: str) -> bool | None:
    """True/False, or None for no such user."""
    return await conn.fetchval(GET_IS_ACTIVE, user_id)


CLEAR_REFRESH_TOKEN = "UPDATE users SET refresh_token = NULL WHERE id = $1"


async def clear_refresh_token(conn: asyncpg.Connection, user_id: str) -> None:
    """Logout, or revocation after a reused refresh token: no refresh token of this user works any more."""
    await conn.execute(CLEAR_REFRESH_TOKEN, user_id)


GET_USER = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1"


async def get_user(conn: asyncpg.Connection, user_id: str) -> User | None:
    row = await conn.fetchrow(GET_USER, user_id)
    return None if row is None else user_from(row)


GET_USER_WITH_CONTENT = f"""
SELECT {USER_COLUMNS},
       COALESCE((SELECT json_agg(json_build_object('id', p.id, 'title', p.title, 'published', p.published)
                                 ORDER BY p.created_at DESC, p.id)
                   FROM posts p WHERE p.author_id = u.id), '[]') AS posts,
       COALESCE((SELECT json_agg(json_build_object('id', f.id, 'original_name', f.original_name,
                                                   'type', f.type, 'status', f.status)
                                 ORDER BY f.created_at DESC, f.id)
                   FROM files f WHERE f.uploaded_by_id = u.id), '[]') AS files
  FROM users u WHERE u.id = $1
"""


async def get_user_with_content(conn: asyncpg.Connection, user_id: str) -> tuple[User, list[Any], list[Any]] | None:
    """The seed's findByEmail: the user with its posts and files (short forms), in one statement."""
    row = await conn.fetchrow(GET_USER_WITH_CONTENT, user_id)
    return None if row is None else (user_from(row), row["posts"], row["files"])


LIST_USERS = f"""
SELECT {USER_COLUMNS}, count(*) OVER () AS total FROM users
 ORDER BY created_at DESC, id
 LIMIT $1 OFFSET $2
"""
COUNT_USERS = "SELECT count(*) FROM users"


async def list_users(conn: asyncpg.Connection, limit: int, offset: int) -> tuple[list[User], int]:
    """A page of users and the total; the count runs again only for a page past the end."""
    rows = await conn.fetch(LIST_USERS, limit, offset)
    return [user_from(r) for r in rows], rows[0]["total"] if rows else await conn.fetchval(COUNT_USERS)


UPDATE_USER = f"""
UPDATE users SET
    name          = CASE WHEN $2 THEN $3 ELSE name END,
    email         = CASE WHEN $4 THEN $5 ELSE email END,
    role          = CASE WHEN $6 THEN $7::user_role ELSE role END,
    is_active     = CASE WHEN $8 THEN $9 ELSE is_active END,
    refresh_token = CASE WHEN $8 AND NOT $9 THEN NULL ELSE refresh_token END  -- deactivation ends the session
 WHERE id = $1
RETURNING {USER_COLUMNS}
"""


async def update_user(conn: asyncpg.Connection, user_id: str, changes: dict[str, Any]) -> User:
    """Sets the fields present in `changes` (name, email, role, is_active); others keep their value."""
    args = []
    for name in ("name", "email", "role", "is_active"):
        args += [name in changes, changes.get(name)]
    try:
        row = await conn.fetchrow(UPDATE_USER, user_id, *args)
    except asyncpg.UniqueViolationError:
        raise EmailTaken(f"{changes['email']} is already registered") from None
    if row is None:
        raise UserNotFound(f"user {user_id}")
    return user_from(row)


DELETE_USER_FILES = """
DELETE FROM files WHERE uploaded_by_id = $1
RETURNING path, filename
"""
DELETE_USER = "DELETE FROM users WHERE id = $1 RETURNING id"


async def delete_user(conn: asyncpg.Connection, user_id: str) -> list[tuple[str, str]]:
    """Deletes the user, its posts, preferences, files and their chunks (the schema's cascades), in one
    transaction. Returns the deleted files' blob locations: the caller removes them after the commit."""
    async with conn.transaction():
        # Files first and explicitly: a cascade would delete them without telling us where their blobs are.
        files = await conn.fetch(DELETE_USER_FILES, user_id)
        if await conn.fetchval(DELETE_USER, user_id) is None:
            raise UserNotFound(f"user {user_id}")
    return [(f["path"], f["filename"]) for f in files]


COUNT_USER_STATS = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE is_active) AS active,
       count(*) FILTER (WHERE role = 'ADMIN') AS admins
  FROM users
"""


async def count_user_stats(conn: asyncpg.Connection) -> dict[str, int]:
    """The seed's getUserStats, counted by one scan instead of three queries."""
    row = await conn.fetchrow(COUNT_USER_STATS)
    return {"total": row["total"], "active": row["active"], "admins": row["admins"],
            "regular": row["total"] - row["admins"]}
