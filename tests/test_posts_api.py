"""Posts over HTTP: creation with attachments in one transaction, listing with COMPLETED files and
pagination, recent posts, who may read and change what, and a fixed number of queries per list."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from service.app import create_app
from service.keys import pool_key
from tests.support import insert_file, insert_post, insert_user, make_settings

POST_KEYS = {
    "id",
    "title",
    "content",
    "published",
    "author_id",
    "author",
    "files",
    "file_count",
    "created_at",
    "updated_at",
}


async def test_create_post_attaches_the_callers_files(client, conn: asyncpg.Connection, user) -> None:
    done = await insert_file(conn, user.id, name="done.jpg", size=10)
    pending = await insert_file(conn, user.id, status="PROCESSING", name="pending.jpg")
    r = await client.post(
        "/api/posts",
        headers=user.headers,
        json={"title": "Holiday", "content": "pictures", "file_ids": [done["id"], pending["id"], done["id"]]},
    )
    assert r.status == 201, await r.text()
    post = await r.json()
    assert set(post) == POST_KEYS
    assert (post["title"], post["content"], post["published"], post["author_id"]) == (
        "Holiday",
        "pictures",
        False,
        user.id,
    )
    assert post["author"] == {"id": user.id, "name": user.email.split("@")[0], "email": user.email}
    [attached_file] = post["files"]  # COMPLETED only...
    assert attached_file.pop("url").startswith(f"/api/files/{done['id']}/content?u={user.id}&exp=")  # signed
    assert attached_file == {
        "id": done["id"],
        "original_name": "done.jpg",
        "type": "IMAGE",
        "size": 10,
        "thumbnail_url": None,
    }
    assert post["file_count"] == 2  # ...but the count is of every attached file, as the seed's _count
    attached = await conn.fetch("SELECT id FROM files WHERE post_id = $1 ORDER BY id", post["id"])
    assert sorted(r["id"] for r in attached) == sorted([done["id"], pending["id"]])


async def test_create_post_with_someone_elses_file_creates_nothing(client, conn: asyncpg.Connection, make_user) -> None:
    me, other = await make_user(), await make_user()
    mine = await insert_file(conn, me.id)
    theirs = await insert_file(conn, other.id)
    r = await client.post(
        "/api/posts",
        headers=me.headers,
        json={"title": "sneaky", "file_ids": [mine["id"], theirs["id"], "no-such-file"]},
    )
    body = await r.json()
    assert r.status == 422 and body["code"] == "UNKNOWN_FILES" and body["field"] == "file_ids"
    assert body["file_ids"] == [theirs["id"], "no-such-file"]
    assert await conn.fetchval("SELECT count(*) FROM posts") == 0
    assert await conn.fetchval("SELECT count(*) FROM files WHERE post_id IS NOT NULL") == 0  # rolled back


async def test_list_posts_visibility_order_and_pagination(client, conn: asyncpg.Connection, make_user) -> None:
    alice, bob, admin = await make_user(), await make_user(), await make_user(role="ADMIN")
    ids = [await insert_post(conn, alice.id, f"alice {i}", age_minutes=10 - i) for i in range(5)]  # ids[4] newest
    draft = await insert_post(conn, alice.id, "alice draft", published=False, age_minutes=0)
    await insert_post(conn, bob.id, "bob 1", age_minutes=20)
    await insert_file(conn, alice.id, post_id=ids[4])
    await insert_file(conn, alice.id, post_id=ids[4], status="FAILED")

    r = await client.get(f"/api/posts?author_id={alice.id}&page=1&limit=2", headers=bob.headers)
    body = await r.json()
    assert r.status == 200 and body["pagination"] == {"page": 1, "limit": 2, "total": 5, "pages": 3}
    assert [p["id"] for p in body["posts"]] == [ids[4], ids[3]]  # newest first, bob sees no draft
    assert len(body["posts"][0]["files"]) == 1 and body["posts"][0]["file_count"] == 2
    r = await client.get(f"/api/posts?author_id={alice.id}&page=3&limit=2", headers=bob.headers)
    assert [p["id"] for p in (await r.json())["posts"]] == [ids[0]]
    r = await client.get(f"/api/posts?author_id={alice.id}&page=4&limit=2", headers=bob.headers)
    assert (await r.json()) == {"posts": [], "pagination": {"page": 4, "limit": 2, "total": 5, "pages": 3}}

    for viewer in (alice, admin):  # the author and an admin see the draft
        r = await client.get(f"/api/posts?author_id={alice.id}&limit=1", headers=viewer.headers)
        body = await r.json()
        assert [p["id"] for p in body["posts"]] == [draft] and body["pagination"]["total"] == 6
    r = await client.get("/api/posts", headers=bob.headers)  # everyone's published posts and bob's own
    assert (await r.json())["pagination"] == {"page": 1, "limit": 10, "total": 6, "pages": 1}
    r = await client.get("/api/posts?author_id=nobody", headers=bob.headers)
    assert (await r.json())["pagination"] == {"page": 1, "limit": 10, "total": 0, "pages": 0}


async def test_recent_posts(client, conn: asyncpg.Connection, make_user) -> None:
    author, reader = await make_user(), await make_user()
    old = await insert_post(conn, author.id, "old", age_minutes=5)
    new = await insert_post(conn, author.id, "new", age_minutes=1)
    await insert_post(conn, author.id, "draft", published=False)
    await insert_file(conn, author.id, post_id=new)
    await insert_file(conn, author.id, post_id=new, status="UPLOADING")
    r = await client.get("/api/posts/recent", headers=reader.headers)
    body = await r.json()
    assert r.status == 200 and [(p["id"], p["file_count"]) for p in body] == [(new, 1), (old, 0)]
    assert body[0]["author"] == {"name": author.email.split("@")[0]} and set(body[0]) == {
        "id",
        "title",
        "created_at",
        "author",
        "file_count",
    }
    r = await client.get("/api/posts/recent?limit=1", headers=reader.headers)
    assert [p["id"] for p in await r.json()] == [new]
    r = await client.get("/api/posts/recent?limit=zero", headers=reader.headers)
    assert r.status == 422 and (await r.json())["field"] == "limit"


async def test_read_and_change_permissions(client, conn: asyncpg.Connection, make_user) -> None:
    author, other, admin = await make_user(), await make_user(), await make_user(role="ADMIN")
    published = await insert_post(conn, author.id, "public")
    draft = await insert_post(conn, author.id, "secret", published=False)

    assert (await client.get(f"/api/posts/{published}", headers=other.headers)).status == 200
    r = await client.get(f"/api/posts/{draft}", headers=other.headers)
    assert r.status == 404 and (await r.json())["code"] == "POST_NOT_FOUND"
    for viewer in (author, admin):
        assert (await client.get(f"/api/posts/{draft}", headers=viewer.headers)).status == 200

    # Others: 404 for a draft (it does not exist for them), 403 for a published post.
    r = await client.patch(f"/api/posts/{draft}", headers=other.headers, json={"title": "mine now"})
    assert r.status == 404
    r = await client.patch(f"/api/posts/{published}", headers=other.headers, json={"title": "mine now"})
    assert r.status == 403 and (await r.json())["code"] == "FORBIDDEN"
    assert (await client.delete(f"/api/posts/{draft}", headers=other.headers)).status == 404
    assert (await client.delete(f"/api/posts/{published}", headers=other.headers)).status == 403
    assert await conn.fetchval("SELECT count(*) FROM posts WHERE title IN ('public', 'secret')") == 2

    r = await client.patch(f"/api/posts/{draft}", headers=author.headers, json={"published": True, "content": None})
    body = await r.json()
    assert r.status == 200 and (body["title"], body["published"], body["content"]) == ("secret", True, None)
    r = await client.patch(f"/api/posts/{draft}", headers=admin.headers, json={"title": "moderated"})
    assert r.status == 200 and (await r.json())["title"] == "moderated"

    attached = await insert_file(conn, author.id, post_id=published)
    assert (await client.delete(f"/api/posts/{published}", headers=author.headers)).status == 204
    assert (await client.get(f"/api/posts/{published}", headers=author.headers)).status == 404
    assert await conn.fetchval("SELECT post_id FROM files WHERE id = $1", attached["id"]) is None  # file stays
    assert (await client.delete(f"/api/posts/{draft}", headers=admin.headers)).status == 204


async def test_list_endpoints_run_a_fixed_number_of_queries(
    aiohttp_client, database_url: str, storage_dir: Path, conn: asyncpg.Connection, make_user
) -> None:
    """No N+1: the same statements whatever the page size, counted on the pool's only connection."""
    author, admin = await make_user(), await make_user(role="ADMIN")
    for i in range(50):
        post_id = await insert_post(conn, author.id, f"post {i}", age_minutes=i)
        await insert_file(conn, author.id, post_id=post_id)
        await insert_file(conn, author.id, post_id=post_id, status="UPLOADING")
    for _ in range(48):
        await insert_user(conn)
    settings = make_settings(database_url, storage_dir, DATABASE_POOL_SIZE="1", DATABASE_POOL_IDLE_TIMEOUT="0")
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/readyz")).status == 200
    statements: list[str] = []
    async with client.app[pool_key].acquire() as pooled:  # the pool's one connection: every request uses it
        pooled.add_query_logger(lambda record: statements.append(record.query))

    async def run(path: str, expected_items: int) -> list[str]:
        statements.clear()
        r = await client.get(path, headers=admin.headers)
        body = await r.json()
        items = body if isinstance(body, list) else body.get("posts", body.get("users"))
        assert r.status == 200 and len(items) == expected_items, path
        await asyncio.sleep(0.05)  # query loggers are called soon after, not during
        # The pool's own reset on release is asyncpg's, once per acquire, not the handler's.
        return [s for s in statements if not s.startswith("SELECT pg_advisory_unlock_all()")]

    # path -> statements: the caller's row (auth), the page, and the total where there is one
    expected = {
        "/api/posts?limit={}": 3,
        f"/api/posts?author_id={author.id}&limit={{}}": 3,
        "/api/posts/recent?limit={}": 2,
        "/api/users?limit={}": 2,
    }
    for path, statements_per_request in expected.items():
        await run(path.format(1), 1)  # warm-up: asyncpg introspects new types once per connection
        one, fifty = await run(path.format(1), 1), await run(path.format(50), 50)
        assert one == fifty, path  # the very same statements for 1 and for 50 items
        assert len(fifty) == statements_per_request, (path, fifty)
