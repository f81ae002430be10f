"""`chunkd seed`: the seed's prisma/seed.ts, idempotent."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from service.auth import hash_password
from service.store import posts, users

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin123"
USER_PASSWORD = "password123"
USER_COUNT, POSTS_PER_USER = 5, 3


@dataclass(frozen=True)
class SeedResult:
    admin_email: str
    users: int
    posts_created: int


async def seed(conn: asyncpg.Connection) -> SeedResult:
    # Hashed once each, as seed.ts does: argon2 is deliberately slow.
    admin_hash, user_hash = hash_password(ADMIN_PASSWORD), hash_password(USER_PASSWORD)
    created = 0
    async with conn.transaction():
        await users.upsert_user(conn, ADMIN_EMAIL, admin_hash, "System Administrator", "ADMIN")
        for i in range(1, USER_COUNT + 1):
            name = f"Test User {i}"
            user_id = await users.upsert_user(conn, f"user{i}@example.com", user_hash, name, "USER")
            for n in range(1, POSTS_PER_USER + 1):
                # seed.ts publishes at random; alternating keeps runs reproducible with both kinds present.
                created += await posts.insert_post_unless_titled(
                    conn,
                    f"Sample Post {n} by {name}",
                    f"This is sample content for post {n} created by {name}",
                    n % 2 == 1,
                    user_id,
                )
        # Seeded users get preferences like everyone else (the 0002 data migration's rule).
        await users.insert_missing_preferences(conn)
    return SeedResult(ADMIN_EMAIL, USER_COUNT, created)
