"""Users: the caller's own account, and the admin's user management and statistics."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service import storage
from service.auth import current_user, require_admin
from service.errors import SelfLockout, UserNotFound
from service.keys import pool_key, settings_key, storage_key
from service.models import Role, User
from service.store import quotas, sessions, users
from service.validation import EMAIL_ADDRESS, Field, email_address, path_id, read_json, read_page


def user_json(user: User) -> dict[str, Any]:
    """The one public shape of a user: never the password hash or the refresh-token digest."""
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "is_active": user.is_active,
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
    }


def admin_user_json(user: User) -> dict[str, Any]:
    """What admins see of a user: the public shape and the user's own quota (null: USER_QUOTA applies)."""
    return {**user_json(user), "quota_bytes": user.quota_bytes}


async def get_me(request: web.Request) -> web.Response:
    """The seed's findByEmail for the caller: the user with its posts and files."""
    async with request.app[pool_key].acquire() as conn:
        found = await users.get_user_with_content(conn, current_user(request).id)
    if found is None:
        raise UserNotFound("the caller's account is gone")
    user, posts, files = found
    async with request.app[pool_key].acquire() as conn:
        used = await quotas.get_usage(conn, user.id)
    quota = user.quota_bytes if user.quota_bytes is not None else request.app[settings_key].user_quota
    return web.json_response(
        {**user_json(user), "usage_bytes": used, "quota_bytes": quota, "posts": posts, "files": files}
    )


async def list_users(request: web.Request) -> web.Response:
    require_admin(request)
    page = read_page(request)
    async with request.app[pool_key].acquire() as conn:
        found, total = await users.list_users(conn, page.limit, page.offset)
    return web.json_response({"users": [admin_user_json(u) for u in found], "pagination": page.pagination(total)})


async def get_user(request: web.Request) -> web.Response:
    require_admin(request)
    user_id = path_id(request)
    async with request.app[pool_key].acquire() as conn:
        user = await users.get_user(conn, user_id)
    if user is None:
        raise UserNotFound(f"user {user_id}")
    return web.json_response(admin_user_json(user))


PATCH_FIELDS = (
    Field("name", str, nullable=True, max_len=200),
    Field("email", str, min_len=1, max_len=254, pattern=EMAIL_ADDRESS, pattern_means="be an email address"),
    Field("role", str, choices=tuple(Role)),
    Field("is_active", bool),
    Field("quota_bytes", int, nullable=True, minimum=0, maximum=2**63 - 1),
)


async def patch_user(request: web.Request) -> web.Response:
    admin = require_admin(request)
    user_id = path_id(request)
    changes = await read_json(request, *PATCH_FIELDS)
    if "email" in changes:
        changes["email"] = email_address(changes["email"])
    if user_id == admin.id and (changes.get("role", Role.ADMIN) != Role.ADMIN or changes.get("is_active") is False):
        raise SelfLockout("an admin cannot demote or deactivate their own account; ask another admin")
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        # An empty PATCH changes nothing, not even updated_at.
        user = await users.update_user(conn, user_id, changes) if changes else await users.get_user(conn, user_id)
        if changes.get("is_active") is False:  # deactivation ends every session
            await sessions.revoke_user_sessions(conn, user_id, "account deactivated")
    if user is None:
        raise UserNotFound(f"user {user_id}")
    return web.json_response(admin_user_json(user))


async def revoke_user_sessions(request: web.Request) -> web.Response:
    """An admin ends all of a user's sessions (a lost laptop, a departing employee); API tokens stay."""
    require_admin(request)
    user_id = path_id(request)
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        if await users.get_user(conn, user_id) is None:
            raise UserNotFound(f"user {user_id}")
        ended = await sessions.revoke_user_sessions(conn, user_id, "revoked by an admin")
    return web.json_response({"sessions_ended": ended})


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
    await storage.delete_file_blobs(request.app[storage_key], [filename for _, filename in files])
    return web.Response(status=204)


async def get_user_stats(request: web.Request) -> web.Response:
    """The seed's getUserStats: {total, active, admins, regular}."""
    require_admin(request)
    async with request.app[pool_key].acquire() as conn:
        return web.json_response(await users.count_user_stats(conn))
