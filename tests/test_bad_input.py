"""Bad input on the accounts and posts endpoints: a 4xx problem naming the field, never a 500,
and nothing written."""

from __future__ import annotations

import asyncpg

JSON = {"Content-Type": "application/json"}


async def post_raw(client, path: str, data: bytes, headers: dict) -> tuple[int, dict]:
    r = await client.post(path, data=data, headers={**JSON, **headers})
    assert r.content_type == "application/problem+json", await r.text()
    return r.status, await r.json()


async def test_malformed_bodies(client, conn: asyncpg.Connection, user) -> None:
    for raw in (b"{", b"", b"[1, 2]", b'"title"', b"null", b'{"title": NaN}', b"[" * 100_000, b"\xff\xfe"):
        status, body = await post_raw(client, "/api/posts", raw, user.headers)
        assert status == 400 and body["code"] == "INVALID_JSON", raw[:20]
    r = await client.post(
        "/api/posts", data=b"title=x", headers={**user.headers, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status == 415 and (await r.json())["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert await conn.fetchval("SELECT count(*) FROM posts") == 0


async def test_fields_are_checked_and_named(client, conn: asyncpg.Connection, user) -> None:
    cases = [
        ({}, "title"),
        ({"title": "ok", "author_id": user.id}, "author_id"),  # unknown field: no writing someone else's post
        ({"title": 5}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "nul \u0000 byte"}, "title"),
        ({"title": "ok", "published": "yes"}, "published"),
        ({"title": "ok", "published": 1}, "published"),
        ({"title": "ok", "content": ["a"]}, "content"),
        ({"title": "ok", "file_ids": "abc"}, "file_ids"),
        ({"title": "ok", "file_ids": [1]}, "file_ids[0]"),
        ({"title": "ok", "file_ids": ["a"] * 101}, "file_ids"),
        ({"title": None}, "title"),
    ]
    for payload, field in cases:
        r = await client.post("/api/posts", json=payload, headers=user.headers)
        body = await r.json()
        assert r.status == 422 and body["code"] == "VALIDATION_FAILED" and body["field"] == field, (payload, body)
    # A lone surrogate is valid JSON text but not Unicode: refused, not a 500 from the database.
    status, body = await post_raw(client, "/api/posts", b'{"title": "\\ud800"}', user.headers)
    assert status == 422 and body["field"] == "title"
    assert await conn.fetchval("SELECT count(*) FROM posts") == 0


async def test_bad_query_and_path_values(client, user) -> None:
    for query, field in (
        ("page=-1", "page"),
        ("limit=ten", "limit"),
        ("page=1e3", "page"),
        ("limit=%C2%B2", "limit"),
        ("author_id=a%00b", "author_id"),
        ("author_id=" + "x" * 300, "author_id"),
    ):
        r = await client.get(f"/api/posts?{query}", headers=user.headers)
        body = await r.json()
        assert r.status == 422 and body["field"] == field, query
    r = await client.get("/api/posts/a%00b", headers=user.headers)
    assert r.status == 422 and (await r.json())["field"] == "id"
    r = await client.patch("/api/posts/nope", json={"title": "x"}, headers=user.headers)
    assert r.status == 404 and (await r.json())["code"] == "POST_NOT_FOUND"


async def test_auth_bodies(client) -> None:
    for path, payload, field in (
        ("/api/auth/login", {"email": "a@example.com"}, "password"),
        ("/api/auth/login", {"email": "a@example.com", "password": "x", "remember": True}, "remember"),
        ("/api/auth/register", {"email": "a@example.com", "password": "x" * 1025}, "password"),
        ("/api/auth/refresh", {"refresh_token": 42}, "refresh_token"),
        ("/api/auth/refresh", {}, "refresh_token"),
    ):
        r = await client.post(path, json=payload)
        body = await r.json()
        assert r.status == 422 and body["field"] == field, (path, payload)
