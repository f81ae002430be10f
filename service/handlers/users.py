"""Users: the caller's own account, and the admin's user management and statistics."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from service import storage
from service.auth import current_user, require_admin
from service.errors import SelfLockout
from service.keys import pool_key, storage_key
from service.models import Role
from service.store import users
from service.validation import Field, email_address, path_id, read_json, read_page


def user_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The one public shape of a user (DESIGN.md): never the password hash or the refresh-token digest."""
    return {"id": row["id"], "email": row["email"], "name": row["name"], "role": row["role"],
            "is_active": row["is_active"], "created_at": row["created_at"].isoformat(),
            "updated_at": row["updated_at"].isoformat()}


async def get_me(request: web.Request) -> web.Response:
    """The seed's findByEmail for the caller: the user with its posts and files."""
    async with request.app[pool_key].acquire() as conn:
        row = await users.fetch_user_with_content(conn, current_user(request).id)
    return web.json_response({**user_json(row), "posts": row["posts"], "files": row["files"]})


async def list_users(request: web.Request) -> web.Response:
    require_admin(request)
    page = read_page(request)
    async with request.app[pool_key].acquire() as conn:
        rows, total = await users.fetch_users_page(conn, page.limit, page.offset)
    return web.json_response({"users": [user_json(r) for r in rows], "pagination": page.pagination(total)})


async def get_user(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = path_id(request)
    async with request.app[pool_key].acquire() as conn:
        row = await users.fetch_user(conn, user_id)
    return web.json_response(user_json(row))


PATCH_FIELDS = (Field("name", str, nullable=True, max_len=200), Field("email", str, min_len=1, max_len=254),
                Field("role", str, choices=tuple(Role)), Field("is_active", bool))


async def patch_user(request: web.Request) -> web.Response:
    admin = require_admin(request)
    user_id = path_id(request)
    changes = await read_json(request, *PATCH_FIELDS)
    if "email" in changes:
        changes["email"] = email_address(changes["email"])
    if user_id == admin.id and (changes.get("role", Role.ADMIN) != Role.ADMIN or changes.get("is_active") is False):
        raise SelfLockout("an admin cannot demote or deactivate their own account; ask another admin")
    async with request.app[pool_key].acquire() as conn:
        # An empty PATCH changes nothing, not even updated_at.
        row = await users.update_user(conn, user_id, changes) if changes else await users.fetch_user(conn, user_id)
    return web.json_response(user_json(row))


async def delete_user(request: web.Request) -> web.Response:
    """Deletes the user with its posts and files (the schema's cascades), then the files' blobs."""
    admin = require_admin(request)
    user_id = path_id(request)
    if user_id == admin.id:
        raise SelfLockout("an admin cannot delete their own account; ask another admin")
    async with request.app[pool_key].acquire() as conn:
        files = await users.delete_user(conn, user_id)
    # After the commit: a rolled-back delete must not have lost blobs. A crash in between leaves
    # orphaned blobs, which `chunkd cleanup` removes.
    await storage.delete_file_blobs(request.app[storage_key], [f["filename"] for f in files])
    return web.Response(status=204)


async def get_user_stats(request: web.Request) -> web.Response:
    """The seed's getUserStats: {total, active, admins, regular}."""
    require_admin(request)
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await users.count_user_stats(conn))
