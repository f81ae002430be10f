"""`chunkd seed`: the seed's users and posts, argon2id hashes, idempotent."""

from __future__ import annotations

import asyncpg

from service.auth import verify_password
from service.seed import seed


async def test_seed_creates_the_seed_data(conn: asyncpg.Connection) -> None:
    result = await seed(conn)
    assert result.posts_created == 15
    admin = await conn.fetchrow("SELECT * FROM users WHERE email = 'admin@example.com'")
    assert admin["role"] == "ADMIN" and admin["name"] == "System Administrator"
    assert admin["password"].startswith("$argon2id$")
    assert verify_password(admin["password"], "admin123")
    users = await conn.fetch("SELECT * FROM users WHERE role = 'USER' ORDER BY email")
    assert [u["email"] for u in users] == [f"user{i}@example.com" for i in range(1, 6)]
    assert all(verify_password(u["password"], "password123") for u in users)
    counts = await conn.fetch("SELECT author_id, count(*) AS n FROM posts GROUP BY author_id")
    assert sorted(c["n"] for c in counts) == [3] * 5
    assert await conn.fetchval("SELECT count(*) FROM user_preferences") == 6


async def test_seed_twice_changes_nothing(conn: asyncpg.Connection) -> None:
    await seed(conn)
    snapshot = await conn.fetch("SELECT id, email, password FROM users ORDER BY id")
    posts = await conn.fetch("SELECT id FROM posts ORDER BY id")
    again = await seed(conn)
    assert again.posts_created == 0
    assert await conn.fetch("SELECT id, email, password FROM users ORDER BY id") == snapshot
    assert await conn.fetch("SELECT id FROM posts ORDER BY id") == posts
