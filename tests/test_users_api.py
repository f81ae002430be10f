"""Users over HTTP: the caller's account with its posts and files; admin listing, changes, deletion
(cascading rows and removing blobs) and statistics; non-admins refused."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from service import storage
from tests.support import insert_chunk, insert_file, insert_post

USER_KEYS = {"id", "email", "name", "role", "is_active", "created_at", "updated_at"}


async def test_me_has_posts_and_files(client, conn: asyncpg.Connection, user) -> None:
    post_id = await insert_post(conn, user.id, "Hello")
    file = await insert_file(conn, user.id, status="UPLOADING", name="movie.mp4")
    r = await client.get("/api/users/me", headers=user.headers)
    assert r.status == 200
    body = await r.json()
    assert set(body) == USER_KEYS | {"posts", "files", "usage_bytes", "quota_bytes"}
    assert body["id"] == user.id and body["email"] == user.email
    assert body["posts"] == [{"id": post_id, "title": "Hello", "published": True}]
    assert body["files"] == [{"id": file["id"], "original_name": "movie.mp4", "type": "IMAGE", "status": "UPLOADING"}]


async def test_admin_routes_refuse_non_admins(client, user, admin) -> None:
    for method, path in (
        ("GET", "/api/users"),
        ("GET", f"/api/users/{admin.id}"),
        ("PATCH", f"/api/users/{admin.id}"),
        ("DELETE", f"/api/users/{admin.id}"),
        ("GET", "/api/admin/stats/users"),
    ):
        r = await client.request(method, path, headers=user.headers, json={"name": "x"})
        assert r.status == 403 and (await r.json())["code"] == "FORBIDDEN", path
        r = await client.request(method, path)
        assert r.status == 401, path


async def test_list_users_paginates(client, make_user, admin) -> None:
    for _ in range(4):
        await make_user()
    r = await client.get("/api/users?page=2&limit=2", headers=admin.headers)
    body = await r.json()
    assert r.status == 200 and body["pagination"] == {"page": 2, "limit": 2, "total": 5, "pages": 3}
    assert len(body["users"]) == 2 and all(set(u) == USER_KEYS | {"quota_bytes"} for u in body["users"])
    r = await client.get("/api/users?page=9&limit=2", headers=admin.headers)
    body = await r.json()
    assert body["users"] == [] and body["pagination"] == {"page": 9, "limit": 2, "total": 5, "pages": 3}
    r = await client.get("/api/users?limit=1000", headers=admin.headers)
    assert (await r.json())["pagination"]["limit"] == 100  # capped
    for query in ("page=0", "page=abc", "limit=0", "limit=-5", "limit=1.5", "page=99999999999"):
        r = await client.get(f"/api/users?{query}", headers=admin.headers)
        body = await r.json()
        assert r.status == 422 and body["field"] == query.split("=")[0], query


async def test_get_and_patch_user(client, conn: asyncpg.Connection, make_user, admin) -> None:
    user = await make_user()
    other = await make_user()
    r = await client.get(f"/api/users/{user.id}", headers=admin.headers)
    assert r.status == 200 and (await r.json())["email"] == user.email
    r = await client.get("/api/users/no-such-user", headers=admin.headers)
    assert r.status == 404 and (await r.json())["code"] == "USER_NOT_FOUND"

    r = await client.patch(
        f"/api/users/{user.id}",
        headers=admin.headers,
        json={"name": "Renamed", "role": "ADMIN", "is_active": False, "email": " NEW@Example.com"},
    )
    body = await r.json()
    assert r.status == 200 and set(body) == USER_KEYS | {"quota_bytes"}
    assert (body["name"], body["role"], body["is_active"], body["email"]) == (
        "Renamed",
        "ADMIN",
        False,
        "new@example.com",
    )
    # deactivation ends the user's sessions
    assert await conn.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", user.id) == 0
    assert (await client.get("/api/users/me", headers=user.headers)).status == 401
    r = await client.patch(f"/api/users/{user.id}", headers=admin.headers, json={"name": None})
    renamed = await r.json()
    assert renamed["name"] is None and renamed["role"] == "ADMIN"  # untouched fields kept
    r = await client.patch(f"/api/users/{user.id}", headers=admin.headers, json={})
    assert await r.json() == renamed  # an empty PATCH changes nothing, not even updated_at

    r = await client.patch(f"/api/users/{user.id}", headers=admin.headers, json={"email": other.email.upper()})
    assert r.status == 409 and (await r.json())["code"] == "EMAIL_TAKEN"
    for payload, field in (
        ({"email": "nope"}, "email"),
        ({"role": "ROOT"}, "role"),
        ({"is_active": "no"}, "is_active"),
        ({"password": "x" * 10}, "password"),
        ({"name": "n" * 201}, "name"),
    ):
        r = await client.patch(f"/api/users/{user.id}", headers=admin.headers, json=payload)
        assert r.status == 422 and (await r.json())["field"] == field, payload
    r = await client.patch(f"/api/users/{admin.id}", headers=admin.headers, json={"role": "USER"})
    assert r.status == 409 and (await r.json())["code"] == "SELF_LOCKOUT"
    assert await conn.fetchval("SELECT role::text FROM users WHERE id = $1", admin.id) == "ADMIN"


async def test_delete_user_cascades_rows_and_removes_blobs(
    client, conn: asyncpg.Connection, make_user, admin, storage_dir: Path
) -> None:
    user = await make_user()
    bystander = await make_user()
    await conn.execute("INSERT INTO user_preferences (user_id) VALUES ($1)", user.id)
    post_id = await insert_post(conn, user.id, "mine", published=False)
    files = [await insert_file(conn, user.id, post_id=post_id), await insert_file(conn, user.id, status="UPLOADING")]
    await insert_chunk(conn, files[1]["id"], 0, b"abc")
    blob = storage.LocalStore(storage_dir).path(files[0]["path"])
    thumb = storage.LocalStore(storage_dir).path(storage.thumbnail_key(files[0]["filename"], "image/webp"))
    # A bystander's file attached to the deleted user's post stays, detached; so does its blob.
    kept = await insert_file(conn, bystander.id, post_id=post_id)
    kept_blob = storage.LocalStore(storage_dir).path(kept["path"])
    for path in (blob, thumb, kept_blob):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"bytes")

    r = await client.delete(f"/api/users/{user.id}", headers=admin.headers)
    assert r.status == 204
    for table, column in (
        ("users", "id"),
        ("posts", "author_id"),
        ("files", "uploaded_by_id"),
        ("user_preferences", "user_id"),
    ):
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", user.id) == 0, table
    assert await conn.fetchval("SELECT count(*) FROM file_chunks") == 0
    assert not blob.exists() and not thumb.exists()
    assert kept_blob.read_bytes() == b"bytes"
    assert await conn.fetchval("SELECT post_id FROM files WHERE id = $1", kept["id"]) is None

    r = await client.delete(f"/api/users/{user.id}", headers=admin.headers)
    assert r.status == 404 and (await r.json())["code"] == "USER_NOT_FOUND"
    r = await client.delete(f"/api/users/{admin.id}", headers=admin.headers)
    assert r.status == 409 and (await r.json())["code"] == "SELF_LOCKOUT"


async def test_user_stats(client, make_user, admin) -> None:
    await make_user()
    await make_user(is_active=False)
    await make_user(role="ADMIN")
    r = await client.get("/api/admin/stats/users", headers=admin.headers)
    assert r.status == 200 and await r.json() == {"total": 4, "active": 3, "admins": 2, "regular": 2}
