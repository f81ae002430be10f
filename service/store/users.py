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


# A user row (models.User): never the password hash.
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


SET_PASSWORD = "UPDATE users SET password = $2 WHERE id = $1"


async def set_password(conn: asyncpg.Connection, user_id: str, password_hash: str) -> None:
    await conn.execute(SET_PASSWORD, user_id, password_hash)


GET_USER = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1"


async def get_user(conn: asyncpg.Connection, user_id: str) -> User | None:
    row = await conn.fetchrow(GET_USER, user_id)
    return None if row is None else user_from(row)


GET_ACTIVE_USER = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND is_active"


async def get_active_user(conn: asyncpg.Connection, user_id: str) -> User | None:
    row = await conn.fetchrow(GET_ACTIVE_USER, user_id)
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
    quota_bytes   = CASE WHEN $10 THEN $11 ELSE quota_bytes END
 WHERE id = $1
RETURNING {USER_COLUMNS}
"""


async def update_user(conn: asyncpg.Connection, user_id: str, changes: dict[str, Any]) -> User:
    """Sets the fields present in `changes` (name, email, role, is_active, quota_bytes); others keep
    their value."""
    args = []
    for name in ("name", "email", "role", "is_active", "quota_bytes"):
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
    return {
        "total": row["total"],
        "active": row["active"],
        "admins": row["admins"],
        "regular": row["total"] - row["admins"],
    }
