"""Sessions per device over HTTP: rotation within a session, reuse revoking one session only, listing,
ending one, logout, password change, deactivation and an admin's revoke ending sessions at once."""

from __future__ import annotations

import asyncpg

from service.auth import RefreshToken
from service.config import Settings
from tests.support import insert_file


async def login(client, user, device: str | None = None, **headers: str) -> dict:
    body = {"email": user.email, "password": user.password, **({"device": device} if device else {})}
    r = await client.post("/api/auth/login", json=body, headers=headers)
    assert r.status == 200, await r.text()
    return await r.json()


def bearer(session: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['access_token']}"}


async def refresh(client, session: dict) -> tuple[int, dict]:
    r = await client.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]})
    return r.status, await r.json()


async def test_two_devices_both_refresh_through_a_day_of_rotations(client, make_user, conn: asyncpg.Connection) -> None:
    user = await make_user()
    laptop = await login(client, user, "laptop")
    phone = await login(client, user, **{"User-Agent": "Phone/1.0 (like nothing else)"})
    assert laptop["session_id"] != phone["session_id"]
    # 96 rotations each (a day of 15-minute access tokens), interleaved.
    for _ in range(96):
        for name in ("laptop", "phone"):
            current = laptop if name == "laptop" else phone
            status, body = await refresh(client, current)
            assert status == 200, body
            assert body["session_id"] == current["session_id"]
            if name == "laptop":
                laptop = body
            else:
                phone = body
    for session in (laptop, phone):
        assert (await client.get("/api/users/me", headers=bearer(session))).status == 200
    r = await client.get("/api/auth/sessions", headers=bearer(phone))
    listed = (await r.json())["sessions"]
    assert sorted(s["device"] for s in listed) == ["Phone/1.0 (like nothing else)", "laptop", "test"]  # + the fixture's
    assert [s["current"] for s in listed if s["id"] == phone["session_id"]] == [True]
    assert [s["current"] for s in listed if s["id"] == laptop["session_id"]] == [False]
    assert all(s["ip"] == "127.0.0.1" for s in listed if s["device"] != "test")


async def test_reuse_in_one_session_leaves_the_other_alive(client, make_user) -> None:
    user = await make_user()
    laptop, phone = await login(client, user, "laptop"), await login(client, user, "phone")
    status, rotated = await refresh(client, laptop)
    assert status == 200
    status, body = await refresh(client, laptop)  # the consumed token again: stolen or replayed
    assert status == 401 and body["code"] == "REFRESH_TOKEN_REUSED"
    status, body = await refresh(client, rotated)  # the whole laptop session is gone...
    assert status == 401 and body["code"] == "REFRESH_TOKEN_REUSED"
    assert (await client.get("/api/users/me", headers=bearer(rotated))).status == 401  # ...its access tokens too
    status, _ = await refresh(client, phone)  # ...the phone's is not
    assert status == 200


async def test_ending_a_session_stops_its_access_token_at_once(client, make_user) -> None:
    user, other = await make_user(), await make_user()
    laptop, phone = await login(client, user, "laptop"), await login(client, user, "phone")
    stranger = await login(client, other)
    r = await client.delete(f"/api/auth/sessions/{laptop['session_id']}", headers=bearer(stranger))
    assert r.status == 404 and (await r.json())["code"] == "SESSION_NOT_FOUND"  # not theirs
    r = await client.delete(f"/api/auth/sessions/{laptop['session_id']}", headers=bearer(phone))
    assert r.status == 204
    r = await client.get("/api/users/me", headers=bearer(laptop))
    assert r.status == 401
    status, body = await refresh(client, laptop)
    assert status == 401 and body["code"] == "REFRESH_TOKEN_INVALID"
    r = await client.delete(f"/api/auth/sessions/{laptop['session_id']}", headers=bearer(phone))
    assert r.status == 404  # already ended
    assert (await client.get("/api/users/me", headers=bearer(phone))).status == 200


async def test_password_change_ends_the_other_sessions(client, make_user, conn: asyncpg.Connection) -> None:
    user = await make_user(password="old password")
    laptop, phone = await login(client, user, "laptop"), await login(client, user, "phone")
    r = await client.post(
        "/api/auth/password",
        headers=bearer(phone),
        json={"current_password": "not it", "new_password": "brand new password"},
    )
    assert r.status == 403 and (await r.json())["code"] == "CURRENT_PASSWORD_WRONG"
    for body, field in (
        ({"current_password": "old password", "new_password": "short"}, "new_password"),
        ({"current_password": "old password"}, "new_password"),
        ({"current_password": 1, "new_password": "brand new password"}, "current_password"),
        ({"current_password": "old password", "new_password": "brand new password", "x": 1}, "x"),
    ):
        r = await client.post("/api/auth/password", headers=bearer(phone), json=body)
        assert r.status == 422 and (await r.json())["field"] == field, body
    r = await client.post(
        "/api/auth/password",
        headers=bearer(phone),
        json={"current_password": "old password", "new_password": "brand new password"},
    )
    assert r.status == 200 and await r.json() == {"sessions_ended": 2}  # the laptop and the fixture's
    assert (await client.get("/api/users/me", headers=bearer(laptop))).status == 401  # at once
    assert (await client.get("/api/users/me", headers=bearer(phone))).status == 200  # the one that changed it
    assert (await refresh(client, laptop))[0] == 401
    r = await client.post("/api/auth/login", json={"email": user.email, "password": "old password"})
    assert r.status == 401
    r = await client.post("/api/auth/login", json={"email": user.email, "password": "brand new password"})
    assert r.status == 200


async def test_admin_revoke_and_deactivation_end_all_sessions(client, make_user, admin) -> None:
    user = await make_user()
    sessions = [await login(client, user, f"device {i}") for i in range(3)]
    r = await client.delete(f"/api/users/{user.id}/sessions", headers=user.headers)
    assert r.status == 403  # not an admin
    r = await client.delete("/api/users/no-such-user/sessions", headers=admin.headers)
    assert r.status == 404 and (await r.json())["code"] == "USER_NOT_FOUND"
    r = await client.delete(f"/api/users/{user.id}/sessions", headers=admin.headers)
    assert r.status == 200 and await r.json() == {"sessions_ended": 4}  # three logins and the fixture's
    for session in sessions:
        assert (await client.get("/api/users/me", headers=bearer(session))).status == 401
        assert (await refresh(client, session))[0] == 401
    again = await login(client, user)
    r = await client.patch(f"/api/users/{user.id}", headers=admin.headers, json={"is_active": False})
    assert r.status == 200
    assert (await client.get("/api/users/me", headers=bearer(again))).status == 401
    status, body = await refresh(client, again)
    assert status == 401 and body["code"] == "ACCOUNT_INACTIVE"


async def test_a_refresh_token_from_before_sessions_keeps_working(
    client, settings: Settings, make_user, conn: asyncpg.Connection
) -> None:
    """sql/0013 turned users.refresh_token into a session whose id is the user's: the old token names it."""
    user = await make_user()
    old = RefreshToken.new(settings, user.id)  # the seed's format: `<user id>.<expiry>.<nonce>.<mac>`
    await conn.execute(
        "INSERT INTO sessions (id, user_id, device, refresh_hash, expires_at)"
        " VALUES ($1, $1, 'session from before sessions', $2, now() + interval '30 days')",
        user.id,
        old.digest,
    )
    status, body = await refresh(client, {"refresh_token": old.token})
    assert status == 200 and body["session_id"] == user.id and body["user"]["id"] == user.id


async def test_session_endpoints_refuse_api_tokens_and_bad_input(client, user) -> None:
    r = await client.post("/api/tokens", headers=user.headers, json={"name": "script", "scopes": ["upload"]})
    token = {"Authorization": f"Bearer {(await r.json())['token']}"}
    for method, path in (
        ("GET", "/api/auth/sessions"),
        ("POST", "/api/auth/logout"),
        ("DELETE", "/api/auth/sessions/x"),
    ):
        r = await client.request(method, path, headers=token)
        assert r.status == 403 and (await r.json())["code"] == "SESSION_REQUIRED", path
    r = await client.post(
        "/api/auth/password",
        headers=token,
        json={"current_password": user.password, "new_password": "brand new password"},
    )
    assert r.status == 403 and (await r.json())["code"] == "SESSION_REQUIRED"
    r = await client.post("/api/auth/login", json={"email": user.email, "password": user.password, "device": 5})
    assert r.status == 422 and (await r.json())["field"] == "device"


async def test_cleanup_removes_expired_sessions_only(
    client, settings: Settings, make_user, conn: asyncpg.Connection
) -> None:
    from service.cleanup import run_cleanup

    user = await make_user()
    old, live = await login(client, user, "old"), await login(client, user, "live")
    await conn.execute("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", old["session_id"])
    report = await run_cleanup(conn, settings)
    assert report.account_rows == 1
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE id = any($1::text[])", [old["session_id"], live["session_id"]]
        )
        == 1
    )
    assert (await client.get("/api/users/me", headers=bearer(live))).status == 200


async def test_a_status_poll_checks_its_session_as_every_request_does(client, make_user, admin, conn) -> None:
    """GET /api/files/{id} reads the session, its user and the file in one statement: an ended session,
    a deactivation and a lost admin role still apply to the very next poll."""
    user, other = await make_user(), await make_user()
    file_id = (await insert_file(conn, other.id, status="COMPLETED", type="OTHER", size=1))["id"]
    mine = (await insert_file(conn, user.id, status="COMPLETED", type="OTHER", size=1))["id"]
    laptop, phone = await login(client, user, "laptop"), await login(client, user, "phone")
    assert (await client.get(f"/api/files/{mine}", headers=bearer(laptop))).status == 200
    r = await client.get(f"/api/files/{file_id}", headers=bearer(laptop))
    assert r.status == 404 and (await r.json())["code"] == "FILE_NOT_FOUND"  # another user's file
    assert (await client.delete(f"/api/auth/sessions/{laptop['session_id']}", headers=bearer(phone))).status == 204
    r = await client.get(f"/api/files/{mine}", headers=bearer(laptop))
    assert r.status == 401 and r.headers["Content-Type"].startswith("application/problem+json")
    r = await client.get(f"/api/files/{mine}", headers={**bearer(laptop), "Authorization": "Bearer forged"})
    assert r.status == 401
    assert (await client.get(f"/api/files/{mine}", headers=bearer(phone))).status == 200

    # An admin sees anyone's file, and no longer once demoted.
    boss = await make_user()
    await conn.execute("UPDATE users SET role = 'ADMIN' WHERE id = $1", boss.id)
    boss_session = await login(client, boss)
    assert (await client.get(f"/api/files/{file_id}", headers=bearer(boss_session))).status == 200
    await conn.execute("UPDATE users SET role = 'USER' WHERE id = $1", boss.id)
    assert (await client.get(f"/api/files/{file_id}", headers=bearer(boss_session))).status == 404

    r = await client.patch(f"/api/users/{user.id}", headers=admin.headers, json={"is_active": False})
    assert r.status == 200
    assert (await client.get(f"/api/files/{mine}", headers=bearer(phone))).status == 401
