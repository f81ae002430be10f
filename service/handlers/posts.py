"""Posts with attached files: the seed's createPostWithFiles, getPostsWithFiles and getRecentPosts.

Who sees what: anyone signed in reads published posts; drafts only their author or an admin (others
get 404, as if the draft did not exist); changes only the author or an admin (others: 404 for a
draft, 403 for a published post)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service import links
from service.auth import current_user
from service.errors import Forbidden, PostNotFound
from service.keys import pool_key, settings_key
from service.models import CurrentUser, Post
from service.store import posts
from service.validation import Field, path_id, query_int, query_text, read_json, read_page

TITLE = Field("title", str, required=True, min_len=1, max_len=200)
CONTENT = Field("content", str, nullable=True, max_len=100_000)
PUBLISHED = Field("published", bool)
FILE_IDS = Field("file_ids", list, max_len=100, items=Field("file_id", str, min_len=1, max_len=200))
PATCH_FIELDS = (Field("title", str, min_len=1, max_len=200), CONTENT, PUBLISHED)
RECENT_DEFAULT, RECENT_MAX = 10, 100


def post_json(post: Post, request: web.Request) -> dict[str, Any]:
    return {
        "id": post.id,
        "title": post.title,
        "content": post.content,
        "published": post.published,
        "author_id": post.author_id,
        "author": post.author,
        "files": _files_json(post.files or [], request),
        "file_count": post.file_count,
        "created_at": post.created_at.isoformat(),
        "updated_at": post.updated_at.isoformat(),
    }


def _files_json(files: list[dict[str, Any]], request: web.Request) -> list[dict[str, Any]]:
    """A post's files with signed links for the reader: `<img src>` and downloads work for anyone who
    may read the post, though the files are the author's."""
    settings, reader = request.app[settings_key], current_user(request).id
    return [
        {
            "id": f["id"],
            "original_name": f["original_name"],
            "type": f["type"],
            "size": f["size"],
            "url": links.sign(settings, f["id"], reader, "content"),
            "thumbnail_url": links.sign(settings, f["id"], reader, "thumbnail") if f["has_thumbnail"] else None,
        }
        for f in files
    ]


async def create_post(request: web.Request) -> web.Response:
    body = await read_json(request, TITLE, CONTENT, PUBLISHED, FILE_IDS)
    file_ids = list(dict.fromkeys(body.get("file_ids", [])))  # a file named twice is attached once
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        post_id = await posts.insert_post_with_files(
            conn, current_user(request).id, body["title"], body.get("content"), body.get("published", False), file_ids
        )
        post = await posts.get_post(conn, post_id)
    assert post is not None  # inserted above, in this transaction
    return web.json_response(post_json(post, request), status=201)


async def list_posts(request: web.Request) -> web.Response:
    """Newest first; `?author_id=` narrows to one author. Files listed are COMPLETED ones only."""
    viewer = current_user(request)
    author_id = query_text(request, "author_id")
    page = read_page(request)
    async with request.app[pool_key].acquire() as conn:
        found, total = await posts.list_posts(conn, author_id, viewer.id, viewer.is_admin, page.limit, page.offset)
    return web.json_response({"posts": [post_json(p, request) for p in found], "pagination": page.pagination(total)})


async def list_recent_posts(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", RECENT_DEFAULT, 1, RECENT_MAX, cap=True)
    async with request.app[pool_key].acquire() as conn:
        recent = await posts.list_recent_posts(conn, limit)
    return web.json_response(
        [
            {
                "id": p.id,
                "title": p.title,
                "created_at": p.created_at.isoformat(),
                "author": p.author,
                "file_count": p.file_count,
            }
            for p in recent
        ]
    )


async def get_post(request: web.Request) -> web.Response:
    post_id = path_id(request)
    async with request.app[pool_key].acquire() as conn:
        post = await posts.get_post(conn, post_id)
    if post is None or not (post.published or _may_change(current_user(request), post)):
        raise PostNotFound(f"post {post_id}")
    return web.json_response(post_json(post, request))


async def patch_post(request: web.Request) -> web.Response:
    post_id = path_id(request)
    changes = await read_json(request, *PATCH_FIELDS)
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        _check_may_change(current_user(request), post_id, await posts.lock_post(conn, post_id))
        if changes:  # an empty PATCH changes nothing, not even updated_at
            await posts.update_post(conn, post_id, changes)
        post = await posts.get_post(conn, post_id)
    assert post is not None  # locked above, in this transaction
    return web.json_response(post_json(post, request))


async def delete_post(request: web.Request) -> web.Response:
    """The post goes; its files stay, detached."""
    post_id = path_id(request)
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        _check_may_change(current_user(request), post_id, await posts.lock_post(conn, post_id))
        await posts.delete_post(conn, post_id)
    return web.Response(status=204)


def _may_change(user: CurrentUser, post: Post) -> bool:
    return user.is_admin or post.author_id == user.id


def _check_may_change(user: CurrentUser, post_id: str, post: Post | None) -> None:
    if post is None or not (post.published or _may_change(user, post)):
        raise PostNotFound(f"post {post_id}")  # someone else's draft does not exist for this caller
    if not _may_change(user, post):
        raise Forbidden("only the author or an admin may change this post")
