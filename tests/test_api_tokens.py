"""API tokens: minted once and stored hashed, scopes enforced on every route (native and tus uploads
too), revocation and expiry at once, and the CLI's `chunkd login` and `chunkd token`."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.support import ROOT, insert_file
from tests.uploading import UPLOAD_ENV

SETTINGS_ENV = UPLOAD_ENV


async def mint(client, user, scopes: list[str], **extra) -> dict:
    r = await client.post("/api/tokens", headers=user.headers, json={"name": "script", "scopes": scopes, **extra})
    assert r.status == 201, await r.text()
    return await r.json()


def bearer(token: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['token']}"}


async def test_a_token_is_shown_once_stored_hashed_and_records_its_use(client, user, conn: asyncpg.Connection) -> None:
    token = await mint(client, user, ["read"], expires_in=3600)
    assert token["token"].startswith("ckd_") and len(token["token"]) > 40
    assert token["scopes"] == ["read"] and token["last_used_at"] is None and token["expires_at"]
    row = await conn.fetchrow("SELECT * FROM api_tokens WHERE id = $1", token["id"])
    assert row["token_hash"] == hashlib.sha256(token["token"].encode()).hexdigest()
    assert token["token"] not in str(dict(row))
    r = await client.get("/api/users/me", headers=bearer(token))
    assert r.status == 200 and (await r.json())["id"] == user.id
    r = await client.get("/api/tokens", headers=user.headers)
    listed = (await r.json())["tokens"]
    assert [t["id"] for t in listed] == [token["id"]] and "token" not in listed[0]
    assert listed[0]["last_used_at"] is not None


async def test_a_read_token_cannot_upload_by_any_protocol(client, user) -> None:
    read, upload = await mint(client, user, ["read"]), await mint(client, user, ["upload"])
    r = await client.post("/api/uploads", headers=bearer(read), json={"filename": "a.bin", "size": 10})
    body = await r.json()
    assert r.status == 403 and body["code"] == "INSUFFICIENT_SCOPE" and body["needed"] == "upload"
    r = await client.post("/api/tus/", headers={**bearer(read), "Tus-Resumable": "1.0.0", "Upload-Length": "10"})
    assert r.status == 403 and (await r.json())["code"] == "INSUFFICIENT_SCOPE"
    # An upload made with the upload token: the read token may look at it but not add to it.
    r = await client.post("/api/uploads", headers=bearer(upload), json={"filename": "a.bin", "size": 10})
    assert r.status == 201
    upload_id = (await r.json())["id"]
    assert (await client.get(f"/api/uploads/{upload_id}", headers=bearer(read))).status == 200
    r = await client.put(f"/api/uploads/{upload_id}/chunks/0", headers=bearer(read), data=b"0123456789")
    assert r.status == 403
    r = await client.put(f"/api/uploads/{upload_id}/chunks/0", headers=bearer(upload), data=b"0123456789")
    assert r.status == 201
    r = await client.post("/api/tus/", headers={**bearer(upload), "Tus-Resumable": "1.0.0", "Upload-Length": "3"})
    assert r.status == 201
    tus_url = "/api/tus/" + r.headers["Location"].rsplit("/", 1)[-1]
    r = await client.patch(
        tus_url,
        data=b"abc",
        headers={
            **bearer(read),
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert r.status == 403
    r = await client.head(tus_url, headers={**bearer(read), "Tus-Resumable": "1.0.0"})
    assert r.status == 200 and r.headers["Upload-Offset"] == "0"
    r = await client.delete(f"/api/files/{upload_id}", headers=bearer(read))
    assert r.status == 403
    assert (await client.post("/api/posts", headers=bearer(read), json={"title": "x"})).status == 403


async def test_admin_scope_only_for_admins_and_never_wider_than_the_minter(client, user, admin) -> None:
    r = await client.post("/api/tokens", headers=user.headers, json={"name": "x", "scopes": ["admin"]})
    assert r.status == 403 and (await r.json())["code"] == "INSUFFICIENT_SCOPE"
    read = await mint(client, user, ["read"])
    r = await client.post("/api/tokens", headers=bearer(read), json={"name": "x", "scopes": ["upload"]})
    assert r.status == 403 and (await r.json())["needed"] == "upload"
    r = await client.post("/api/tokens", headers=bearer(read), json={"name": "x", "scopes": ["read"]})
    assert r.status == 403  # minting is a write: a read token cannot do it at all
    admin_upload, admin_all = await mint(client, admin, ["upload"]), await mint(client, admin, ["admin"])
    r = await client.get("/api/admin/stats/users", headers=bearer(admin_upload))
    assert r.status == 403 and (await r.json())["code"] == "INSUFFICIENT_SCOPE"
    assert (await client.get("/api/admin/stats/users", headers=bearer(admin_all))).status == 200
    upload_token = await mint(client, user, ["upload"])
    r = await client.get("/api/admin/stats/users", headers=bearer(upload_token))
    assert r.status == 403 and (await r.json())["code"] == "FORBIDDEN"  # the role, whatever the token


async def test_revoked_and_expired_tokens_stop_at_once(client, user, make_user, conn: asyncpg.Connection) -> None:
    token, other = await mint(client, user, ["upload"]), await make_user()
    r = await client.delete(f"/api/tokens/{token['id']}", headers=other.headers)
    assert r.status == 404 and (await r.json())["code"] == "TOKEN_NOT_FOUND"  # someone else's
    assert (await client.get("/api/files", headers=bearer(token))).status == 200
    assert (await client.delete(f"/api/tokens/{token['id']}", headers=user.headers)).status == 204
    assert (await client.get("/api/files", headers=bearer(token))).status == 401
    assert (await client.delete(f"/api/tokens/{token['id']}", headers=user.headers)).status == 404
    expiring = await mint(client, user, ["read"], expires_in=60)
    await conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1", expiring["id"])
    assert (await client.get("/api/files", headers=bearer(expiring))).status == 401
    forged = {"Authorization": "Bearer ckd_" + "A" * 43}
    assert (await client.get("/api/files", headers=forged)).status == 401
    deactivated = await mint(client, other, ["read"])
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", other.id)
    assert (await client.get("/api/files", headers=bearer(deactivated))).status == 401


async def test_token_bad_input(client, user) -> None:
    cases = [
        ({"scopes": ["read"]}, "name"),
        ({"name": "x"}, "scopes"),
        ({"name": "x", "scopes": "read"}, "scopes"),
        ({"name": "x", "scopes": ["write"]}, "scopes[0]"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["read"], "expires_in": 5}, "expires_in"),
        ({"name": "x", "scopes": ["read"], "expires_in": "1h"}, "expires_in"),
        ({"name": "x", "scopes": ["read"], "owner": "someone"}, "owner"),
        ({"name": " ", "scopes": ["read"]}, "name"),
    ]
    for body, field in cases:
        r = await client.post("/api/tokens", headers=user.headers, json=body)
        problem = await r.json()
        assert r.status == 422 and problem["code"] == "VALIDATION_FAILED" and problem["field"] == field, body
    assert (await client.get("/api/tokens", headers=user.headers)).status == 200
    assert await (await client.get("/api/tokens", headers=user.headers)).json() == {"tokens": []}


def run_chunkd(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_login_saves_a_private_token_that_later_commands_use(chunkd, make_user, tmp_path: Path) -> None:
    user = await make_user(password="cli password")
    server = chunkd("serve", **UPLOAD_ENV)
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "CHUNKD_URL": server.url}
    wrong = run_chunkd("login", "--email", user.email, CHUNKD_PASSWORD="nope", **env)
    assert wrong.returncode == 2 and "401" in wrong.stderr
    done = run_chunkd("login", "--email", user.email, CHUNKD_PASSWORD="cli password", **env)
    assert done.returncode == 0, done.stderr
    saved = tmp_path / "state" / "chunkd" / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and "ckd_" in saved.read_text()

    created = run_chunkd("token", "create", "ci job", "--scopes", "read", **env)
    assert created.returncode == 0 and created.stdout.strip().startswith("ckd_"), created.stderr
    listed = run_chunkd("token", "list", **env)
    assert listed.returncode == 0 and "ci job" in listed.stdout and "chunkd CLI on" in listed.stdout
    ci_id = next(line.split()[0] for line in listed.stdout.splitlines() if "ci job" in line)
    too_wide = run_chunkd("token", "create", "x", "--scopes", "admin", **env)
    assert too_wide.returncode == 2 and "403" in too_wide.stderr

    data = os.urandom(300 * 1024)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    uploaded = run_chunkd("upload", str(path), "--state-dir", str(tmp_path / "uploads"), **env)  # no flags
    assert uploaded.returncode == 0, uploaded.stderr
    assert f"sha256 {hashlib.sha256(data).hexdigest()}" in uploaded.stdout

    revoked = run_chunkd("token", "revoke", ci_id, **env)
    assert revoked.returncode == 0 and ci_id not in run_chunkd("token", "list", **env).stdout


async def test_a_status_poll_with_an_api_token_checks_it_as_every_request_does(
    client, user, make_user, admin, conn: asyncpg.Connection
) -> None:
    """GET /api/files/{id} reads an API token, its user and the file in one statement: a revocation, an
    expiry, a deactivation or a lost admin role applies to the very next poll; its use is recorded."""
    other = await make_user()
    mine = (await insert_file(conn, user.id, status="COMPLETED", type="OTHER", size=1))["id"]
    theirs = (await insert_file(conn, other.id, status="COMPLETED", type="OTHER", size=1))["id"]
    token = await mint(client, user, ["read"])
    r = await client.get(f"/api/files/{mine}", headers=bearer(token))
    assert r.status == 200 and (await r.json())["id"] == mine
    assert await conn.fetchval("SELECT last_used_at IS NOT NULL FROM api_tokens WHERE id = $1", token["id"])
    assert (await client.get(f"/api/files/{theirs}", headers=bearer(token))).status == 404
    assert (await client.get(f"/api/files/{mine}", headers={"Authorization": "Bearer ckd_" + "A" * 43})).status == 401
    assert (await client.delete(f"/api/tokens/{token['id']}", headers=user.headers)).status == 204
    r = await client.get(f"/api/files/{mine}", headers=bearer(token))
    assert r.status == 401 and r.headers["Content-Type"].startswith("application/problem+json")

    expiring = await mint(client, user, ["read"], expires_in=60)
    assert (await client.get(f"/api/files/{mine}", headers=bearer(expiring))).status == 200
    await conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1", expiring["id"])
    assert (await client.get(f"/api/files/{mine}", headers=bearer(expiring))).status == 401

    boss_token = await mint(client, admin, ["admin"])
    assert (await client.get(f"/api/files/{theirs}", headers=bearer(boss_token))).status == 200
    await conn.execute("UPDATE users SET role = 'USER' WHERE id = $1", admin.id)
    assert (await client.get(f"/api/files/{theirs}", headers=bearer(boss_token))).status == 404
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", admin.id)
    assert (await client.get(f"/api/files/{theirs}", headers=bearer(boss_token))).status == 401
