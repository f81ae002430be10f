"""The accounts and posts API through a real `chunkd serve` process on a seeded database."""

from __future__ import annotations

import aiohttp
import asyncpg

from service import seed


async def test_seeded_accounts_through_a_real_server(chunkd, conn: asyncpg.Connection) -> None:
    await seed.seed(conn)
    server = chunkd("serve")
    async with aiohttp.ClientSession(server.url) as http:
        async with http.post("/api/auth/login", json={"email": "admin@example.com", "password": "admin123"}) as r:
            assert r.status == 200
            admin = await r.json()
        auth = {"Authorization": f"Bearer {admin['access_token']}"}
        async with http.get("/api/admin/stats/users", headers=auth) as r:
            assert await r.json() == {"total": 6, "active": 6, "admins": 1, "regular": 5}

        async with http.post("/api/auth/login", json={"email": "user1@example.com", "password": "password123"}) as r:
            user = await r.json()
        auth = {"Authorization": f"Bearer {user['access_token']}"}
        async with http.post("/api/posts", headers=auth, json={"title": "From the wire", "published": True}) as r:
            assert r.status == 201
            post = await r.json()
        async with http.get("/api/posts/recent?limit=1", headers=auth) as r:
            assert [p["id"] for p in await r.json()] == [post["id"]]
        async with http.get("/api/users/me", headers=auth) as r:
            me = await r.json()
        assert len(me["posts"]) == 4 and me["email"] == "user1@example.com"  # three seeded posts and the new one
        async with http.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]}) as r:
            assert r.status == 200
