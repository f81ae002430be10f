"""Times the post-listing statements on a large table, with and without migration 0006's indexes.

    .venv/bin/python -m bench.post_listing [POSTS]

Starts a throwaway embedded PostgreSQL, migrates, loads POSTS posts (default 200000) by 2000 authors,
half published, a file on every fourth post, then prints the median of 5 runs per statement."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg

from bench.timing import bench_database, median_ms
from service import migrate
from service.store import posts

DROP_0006 = "DROP INDEX idx_posts_recent, idx_posts_author_recent"
CREATE_0006 = (migrate.SQL_DIR / "0006_post_listing_indexes.sql").read_text()


async def run(n: int) -> None:
    async with bench_database(fsync="off", synchronous_commit="off") as (url, _):
        conn = await asyncpg.connect(url)
        await measure(conn, n)
        await conn.close()


async def measure(conn: asyncpg.Connection, n: int) -> None:
    await conn.execute(
        "INSERT INTO users (email, password) SELECT 'u' || i || '@example.com', 'x' FROM generate_series(1, 2000) i"
    )
    await conn.execute(
        """
        INSERT INTO posts (title, author_id, published, created_at)
        SELECT 'post ' || i, (SELECT id FROM users ORDER BY email OFFSET i % 2000 LIMIT 1), i % 2 = 0,
               now() - make_interval(secs => i)
          FROM generate_series(1, $1) i""",
        n,
    )
    await conn.execute("""
        INSERT INTO files (original_name, filename, mimetype, size, type, status, path, uploaded_by_id, post_id, chunk_size)
        SELECT 'f', md5(p.id), 'image/jpeg', 1, 'IMAGE', 'COMPLETED', 'files/x', p.author_id, p.id, 1
          FROM posts p WHERE p.created_at::text LIKE '%0%'""")
    await conn.execute("ANALYZE")
    author = await conn.fetchval("SELECT author_id FROM posts LIMIT 1")
    reader = await conn.fetchval("SELECT id FROM users ORDER BY email DESC LIMIT 1")
    cases: dict[str, tuple[Any, ...]] = {
        "recent 10": (posts.LIST_RECENT_POSTS, 10),
        "list page 1 (all)": (posts.LIST_POSTS, reader, False, 10, 0),
        "list count (all)": (posts.COUNT_POSTS, reader, False),
        "list page 1 (one author)": (posts.LIST_AUTHOR_POSTS, reader, False, 10, 0, author),
        "list count (one author)": (posts.COUNT_AUTHOR_POSTS, reader, False, author),
    }
    for label, ddl in (("without 0006", DROP_0006), ("with 0006", CREATE_0006)):
        await conn.execute(ddl)
        await conn.execute("ANALYZE posts")
        for name, (sql, *args) in cases.items():
            print(f"{label:14} {name:26} {await median_ms(conn, sql, *args):8.1f} ms")


def main() -> None:
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))


if __name__ == "__main__":
    main()
