"""posts: SQL and the functions that run it."""
from __future__ import annotations

import asyncpg

INSERT_POST_UNLESS_TITLED = """
INSERT INTO posts (title, content, published, author_id)
SELECT $1, $2, $3, $4
 WHERE NOT EXISTS (SELECT 1 FROM posts WHERE author_id = $4 AND title = $1)
"""


async def insert_post_unless_titled(conn: asyncpg.Connection, title: str, content: str,
                                    published: bool, author_id: str) -> bool:
    """Idempotent seeding: an author never gets two posts of the same seeded title."""
    return await conn.execute(INSERT_POST_UNLESS_TITLED, title, content, published, author_id) == "INSERT 0 1"
