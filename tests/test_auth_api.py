"""Sessions over HTTP: register, login, refresh rotation with reuse detection, logout, inactive users."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import jwt

from service.auth import RefreshToken
from service.config import Settings
from service.embedded import local_secret
from tests.support import ROOT

USER_KEYS = {"id", "email", "name", "role", "is_active", "created_at", "updated_at"}


async def register(client, email: str = "New.Person@Example.COM ", password: str = "long enough") -> dict:
    r = await client.post("/api/auth/register", json={"email": email, "password": password, "name": "New Person"})
    assert r.status == 201, await r.text()
    return await r.json()


def assert_session(body: dict, settings: Settings) -> None:
    assert body["token_type"] == "Bearer" and body["expires_in"] == settings.access_token_ttl
    assert set(body["user"]) == USER_KEYS  # never password or refresh_token
    claims = jwt.decode(body["access_token"], settings.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == body["user"]["id"] and claims["exp"] - claims["iat"] == settings.access_token_ttl


async def test_register_normalises_email_hashes_password_and_creates_preferences(
    client, settings: Settings, conn: asyncpg.Connection
) -> None:
    body = await register(client)
    assert_session(body, settings)
    assert body["user"]["email"] == "new.person@example.com" and body["user"]["role"] == "USER"
    row = await conn.fetchrow("SELECT password, refresh_token FROM users WHERE id = $1", body["user"]["id"])
    assert row["password"].startswith("$argon2id$") and "long enough" not in row["password"]
    assert row["refresh_token"] is None  # unused since sessions (sql/0013)
    stored = await conn.fetchval(
        "SELECT refresh_hash FROM sessions WHERE id = $1 AND user_id = $2", body["session_id"], body["user"]["id"]
    )
    assert stored == RefreshToken.parse(settings, body["refresh_token"]).digest  # only the hash
    assert await conn.fetchval("SELECT theme FROM user_preferences WHERE user_id = $1", body["user"]["id"]) == "light"
    r = await client.get("/api/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert r.status == 200 and (await r.json())["email"] == "new.person@example.com"


async def test_register_refusals(client, conn: asyncpg.Connection) -> None:
    await register(client, "taken@example.com")
    r = await client.post("/api/auth/register", json={"email": " TAKEN@example.com", "password": "whatever1"})
    assert r.status == 409 and (await r.json())["code"] == "EMAIL_TAKEN"
    cases = [
        ({"email": "x@example.com", "password": "short"}, "password"),
        ({"email": "not-an-email", "password": "long enough"}, "email"),
        ({"email": "a@b", "password": "long enough"}, "email"),
        ({"password": "long enough"}, "email"),
        ({"email": "y@example.com", "password": "long enough", "role": "ADMIN"}, "role"),
        ({"email": "y@example.com", "password": 12345678}, "password"),
    ]
    for payload, field in cases:
        r = await client.post("/api/auth/register", json=payload)
        body = await r.json()
        assert r.status == 422 and body["code"] == "VALIDATION_FAILED" and body["field"] == field, payload
    assert await conn.fetchval("SELECT count(*) FROM users") == 1


async def test_login_and_its_refusals(client, settings: Settings, make_user) -> None:
    user = await make_user(email="someone@example.com", password="right password")
    r = await client.post("/api/auth/login", json={"email": "SomeOne@example.com", "password": "right password"})
    assert r.status == 200
    body = await r.json()
    assert_session(body, settings)
    assert body["user"]["id"] == user.id
    for email, password in (("someone@example.com", "wrong password"), ("nobody@example.com", "right password")):
        r = await client.post("/api/auth/login", json={"email": email, "password": password})
        assert r.status == 401 and (await r.json())["code"] == "INVALID_CREDENTIALS"


async def test_inactive_user_cannot_log_in_or_refresh(client, conn: asyncpg.Connection, make_user) -> None:
    user = await make_user(password="right password")
    r = await client.post("/api/auth/login", json={"email": user.email, "password": "right password"})
    session = await r.json()
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
    r = await client.post("/api/auth/login", json={"email": user.email, "password": "right password"})
    assert r.status == 401 and (await r.json())["code"] == "ACCOUNT_INACTIVE"
    r = await client.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert r.status == 401 and (await r.json())["code"] == "ACCOUNT_INACTIVE"
    r = await client.get("/api/users/me", headers={"Authorization": f"Bearer {session['access_token']}"})
    assert r.status == 401


async def test_refresh_rotates_and_a_reused_token_revokes_the_session(client, conn: asyncpg.Connection) -> None:
    first = await register(client)
    r = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status == 200
    second = await r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["user"]["id"] == first["user"]["id"]

    # The first token was consumed: presenting it again is theft or replay, so the session ends...
    r = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status == 401 and (await r.json())["code"] == "REFRESH_TOKEN_REUSED"
    assert (
        await conn.fetchval("SELECT revoked_why FROM sessions WHERE id = $1", first["session_id"])
        == "refresh token reused"
    )
    # ...including the token the rotation had issued.
    r = await client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status == 401 and (await r.json())["code"] == "REFRESH_TOKEN_REUSED"


async def test_two_concurrent_refreshes_with_one_token_cannot_both_win(client) -> None:
    session = await register(client)
    responses = await asyncio.gather(
        *(client.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]}) for _ in range(4))
    )
    assert sorted(r.status for r in responses) == [200, 401, 401, 401]
    for r in responses:
        r.release()


async def test_forged_malformed_and_expired_refresh_tokens(
    client, settings: Settings, conn: asyncpg.Connection
) -> None:
    session = await register(client)
    session_id = session["session_id"]
    stored = await conn.fetchval("SELECT refresh_hash FROM sessions WHERE id = $1", session_id)
    forged = f"{session_id}.{int(time.time()) + 3600}.{'A' * 43}.{'B' * 43}"  # well-formed, not signed by us
    expired = RefreshToken.new(settings.replace(refresh_token_ttl=-10), session_id).token
    for token in (forged, "garbage", "a.b.c", expired):
        r = await client.post("/api/auth/refresh", json={"refresh_token": token})
        assert r.status == 401 and (await r.json())["code"] == "REFRESH_TOKEN_INVALID", token
    # None of those could end the real session.
    assert (
        await conn.fetchval("SELECT refresh_hash FROM sessions WHERE id = $1 AND revoked_at IS NULL", session_id)
        == stored
    )
    r = await client.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert r.status == 200


async def test_logout_ends_the_refresh_session(client, conn: asyncpg.Connection) -> None:
    session = await register(client)
    assert (await client.post("/api/auth/logout")).status == 401  # needs the access token
    r = await client.post("/api/auth/logout", headers={"Authorization": f"Bearer {session['access_token']}"})
    assert r.status == 204
    assert await conn.fetchval("SELECT revoked_why FROM sessions WHERE id = $1", session["session_id"]) == "logout"
    r = await client.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert r.status == 401 and (await r.json())["code"] == "REFRESH_TOKEN_INVALID"
    # The access token of the ended session stops at once, not when it expires.
    r = await client.get("/api/users/me", headers={"Authorization": f"Bearer {session['access_token']}"})
    assert r.status == 401


def test_serve_refuses_an_external_database_without_jwt_secret(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": "", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "chunkd: JWT_SECRET: required with an external DATABASE_URL (at least 32 characters)"
    ]


def test_embedded_jwt_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "jwt_secret"
    secret = local_secret(path)
    assert len(secret) >= 32 and local_secret(path) == secret  # kept: tokens survive restarts
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
