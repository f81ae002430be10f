"""posts: SQL and the functions that run it."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg

from service.errors import UnknownFiles
from service.models import Post


def post_from(row: asyncpg.Record) -> Post:
    """The row's own columns and whichever listing extras the statement selected."""
    return Post(**{f.name: row[f.name] for f in dataclasses.fields(Post) if f.name in row})


INSERT_POST_UNLESS_TITLED = """
INSERT INTO posts (title, content, published, author_id)
SELECT $1, $2, $3, $4
 WHERE NOT EXISTS (SELECT 1 FROM posts WHERE author_id = $4 AND title = $1)
"""


async def insert_post_unless_titled(
    conn: asyncpg.Connection, title: str, content: str, published: bool, author_id: str
) -> bool:
    """Idempotent seeding: an author never gets two posts of the same seeded title."""
    return await conn.execute(INSERT_POST_UNLESS_TITLED, title, content, published, author_id) == "INSERT 0 1"


INSERT_POST = """
INSERT INTO posts (title, content, published, author_id) VALUES ($1, $2, $3, $4)
RETURNING id
"""
ATTACH_FILES = """
UPDATE files SET post_id = $1
 WHERE id = any($2::text[]) AND uploaded_by_id = $3
RETURNING id
"""


async def insert_post_with_files(
    conn: asyncpg.Connection, author_id: str, title: str, content: str | None, published: bool, file_ids: list[str]
) -> str:
    """The seed's createPostWithFiles: the post and its attachments in one transaction. A file that is
    missing or someone else's rolls everything back (UnknownFiles names them)."""
    async with conn.transaction():
        post_id = await conn.fetchval(INSERT_POST, title, content, published, author_id)
        if file_ids:
            attached = {r["id"] for r in await conn.fetch(ATTACH_FILES, post_id, file_ids, author_id)}
            unknown = [i for i in file_ids if i not in attached]
            if unknown:
                raise UnknownFiles(
                    f"not your files, or no such files: {', '.join(unknown)}", field="file_ids", file_ids=unknown
                )
    return post_id


# A post as lists show it (the seed's getPostsWithFiles): author, COMPLETED files (their links are signed
# for the reader by the handler), and the count of all
# attached files (the seed's `_count: {files: true}` has no status filter). `{posts}` is the set of posts
# to show; the files are aggregated per post in a lateral subquery, so a page of any size is one statement.
POST_LISTING = """
SELECT p.*,
       json_build_object('id', u.id, 'name', u.name, 'email', u.email) AS author,
       COALESCE(f.files, '[]') AS files, COALESCE(f.file_count, 0) AS file_count
  FROM ({posts}) p
  JOIN users u ON u.id = p.author_id
  LEFT JOIN LATERAL (
      SELECT json_agg(json_build_object('id', id, 'original_name', original_name, 'type', type, 'size', size,
                                        'has_thumbnail', metadata ? 'thumbnail')
                      ORDER BY created_at, id)
                 FILTER (WHERE status = 'COMPLETED') AS files,
             count(*) AS file_count
        FROM files WHERE post_id = p.id
  ) f ON true
"""

GET_POST = POST_LISTING.format(posts="SELECT * FROM posts WHERE id = $1")
ORDER = " ORDER BY p.created_at DESC, p.id DESC"


async def get_post(conn: asyncpg.Connection, post_id: str) -> Post | None:
    row = await conn.fetchrow(GET_POST, post_id)
    return None if row is None else post_from(row)


# Visible to the viewer ($1; $2: is an admin): published posts, the viewer's own drafts, every draft for
# an admin; optionally of one author. The page is cut first, walking idx_posts_recent or
# idx_posts_author_recent newest first, and only its posts get authors and files: joining first would
# aggregate files for every matching post. The author filter is a statement of its own, not
# `($n IS NULL OR author_id = $n)`, which a generic plan cannot answer from the index.
VISIBLE = "(published OR author_id = $1 OR $2)"
PAGE = " ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
LIST_POSTS = POST_LISTING.format(posts=f"SELECT * FROM posts WHERE {VISIBLE}{PAGE}") + ORDER
COUNT_POSTS = f"SELECT count(*) FROM posts WHERE {VISIBLE}"
LIST_AUTHOR_POSTS = POST_LISTING.format(posts=f"SELECT * FROM posts WHERE author_id = $5 AND {VISIBLE}{PAGE}") + ORDER
COUNT_AUTHOR_POSTS = f"SELECT count(*) FROM posts WHERE author_id = $3 AND {VISIBLE}"


async def list_posts(
    conn: asyncpg.Connection, author_id: str | None, viewer_id: str, viewer_is_admin: bool, limit: int, offset: int
) -> tuple[list[Post], int]:
    """A page of posts, newest first, and the total number the viewer may see."""
    if author_id is None:
        rows = await conn.fetch(LIST_POSTS, viewer_id, viewer_is_admin, limit, offset)
        return [post_from(r) for r in rows], await conn.fetchval(COUNT_POSTS, viewer_id, viewer_is_admin)
    rows = await conn.fetch(LIST_AUTHOR_POSTS, viewer_id, viewer_is_admin, limit, offset, author_id)
    return [post_from(r) for r in rows], await conn.fetchval(COUNT_AUTHOR_POSTS, viewer_id, viewer_is_admin, author_id)


LIST_RECENT_POSTS = """
SELECT p.*, json_build_object('name', u.name) AS author,
       (SELECT count(*) FROM files f WHERE f.post_id = p.id AND f.status = 'COMPLETED') AS file_count
  FROM posts p
  JOIN users u ON u.id = p.author_id
 WHERE p.published
 ORDER BY p.created_at DESC, p.id DESC
 LIMIT $1
"""


async def list_recent_posts(conn: asyncpg.Connection, limit: int) -> list[Post]:
    """The seed's getRecentPosts: published, newest first, author name and completed-file count."""
    return [post_from(r) for r in await conn.fetch(LIST_RECENT_POSTS, limit)]


LOCK_POST = "SELECT * FROM posts WHERE id = $1 FOR UPDATE"


async def lock_post(conn: asyncpg.Connection, post_id: str) -> Post | None:
    """Who may change the post is decided on a locked row: a concurrent change waits for the decision."""
    row = await conn.fetchrow(LOCK_POST, post_id)
    return None if row is None else post_from(row)


UPDATE_POST = """
UPDATE posts SET
    title     = CASE WHEN $2 THEN $3 ELSE title END,
    content   = CASE WHEN $4 THEN $5 ELSE content END,
    published = CASE WHEN $6 THEN $7 ELSE published END
 WHERE id = $1
"""


async def update_post(conn: asyncpg.Connection, post_id: str, changes: dict[str, Any]) -> None:
    """Sets the fields present in `changes` (title, content, published); others keep their value."""
    args: list[Any] = []
    for name in ("title", "content", "published"):
        args += [name in changes, changes.get(name)]
    await conn.execute(UPDATE_POST, post_id, *args)


DELETE_POST = "DELETE FROM posts WHERE id = $1"


async def delete_post(conn: asyncpg.Connection, post_id: str) -> None:
    """Attached files stay, detached (files.post_id ON DELETE SET NULL)."""
    await conn.execute(DELETE_POST, post_id)
