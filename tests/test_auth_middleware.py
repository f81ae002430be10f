"""Every /api route needs a valid access token of an active user."""

from __future__ import annotations

import asyncio
import time

import jwt
from aiohttp import web

from service.app import create_app
from service.auth import current_user, require_admin
from service.config import Settings
from tests.support import insert_file, session_token


async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"id": current_user(request).id})


async def admin_only(request: web.Request) -> web.Response:
    return web.json_response({"id": require_admin(request).id})


async def make_client(aiohttp_client, settings: Settings):
    app = create_app(settings)
    app.router.add_get("/api/test/whoami", whoami)
    app.router.add_get("/api/test/admin", admin_only)
    return await aiohttp_client(app)


async def test_token_rules(aiohttp_client, settings: Settings, make_user) -> None:
    client = await make_client(aiohttp_client, settings)
    user = await make_user()
    r = await client.get("/api/test/whoami", headers=user.headers)
    assert r.status == 200 and (await r.json()) == {"id": user.id}

    r = await client.get("/api/test/whoami")
    assert r.status == 401 and (await r.json())["code"] == "UNAUTHORIZED"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")

    forged = jwt.encode({"sub": user.id, "exp": time.time() + 60, "typ": "access"}, "another-secret" * 4, "HS256")
    expired = jwt.encode({"sub": user.id, "exp": time.time() - 1, "typ": "access"}, settings.jwt_secret, "HS256")
    for token in ("garbage", forged, expired):
        r = await client.get("/api/test/whoami", headers={"Authorization": f"Bearer {token}"})
        assert r.status == 401 and r.content_type == "application/problem+json", token


async def test_inactive_user_and_roles(aiohttp_client, settings: Settings, make_user) -> None:
    client = await make_client(aiohttp_client, settings)
    inactive = await make_user(is_active=False)
    assert (await client.get("/api/test/whoami", headers=inactive.headers)).status == 401
    user, admin = await make_user(), await make_user(role="ADMIN")
    r = await client.get("/api/test/admin", headers=user.headers)
    assert r.status == 403 and (await r.json())["code"] == "FORBIDDEN"
    assert (await client.get("/api/test/admin", headers=admin.headers)).status == 200


async def test_ops_endpoints_need_no_token(client) -> None:
    assert (await client.get("/healthz")).status == 200


async def test_a_token_that_worked_stops_at_its_expiry(aiohttp_client, settings: Settings, make_user, conn) -> None:
    """The signature check of a token is remembered (auth._verified_claims); its expiry is not: a token
    answered 200 a moment ago is 401 once it has expired, on the status poll's path too."""
    user = await make_user()
    client = await make_client(aiohttp_client, settings)
    token = await session_token(conn, settings.replace(access_token_ttl=2), user.id)
    file_id = (await insert_file(conn, user.id, status="COMPLETED", type="OTHER", size=1))["id"]
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/api/test/whoami", f"/api/files/{file_id}"):
        assert (await client.get(path, headers=headers)).status == 200
    await asyncio.sleep(max(jwt.decode(token, options={"verify_signature": False})["exp"] - time.time(), 0) + 0.1)
    for path in ("/api/test/whoami", f"/api/files/{file_id}"):
        r = await client.get(path, headers=headers)
        assert r.status == 401 and "expired" in (await r.json())["detail"], path
