"""Quotas: USER_QUOTA and an admin's per-user quota_bytes bound stored bytes plus the declared sizes of
unfinished uploads; creation past it (native or tus, or a deferred tus length) is a 413 QUOTA_EXCEEDED
with the numbers, and nothing is written."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.support import insert_file

SETTINGS_ENV = {"USER_QUOTA": "1000", "DEFAULT_CHUNK_SIZE": "64KiB"}
TUS = {"Tus-Resumable": "1.0.0"}


async def create(client, user, size: int):
    return await client.post("/api/uploads", headers=user.headers, json={"filename": "f.bin", "size": size})


async def me(client, user) -> dict:
    return await (await client.get("/api/users/me", headers=user.headers)).json()


async def test_native_and_tus_creation_past_the_quota_is_refused(client, user, conn: asyncpg.Connection) -> None:
    assert ((await me(client, user))["usage_bytes"], (await me(client, user))["quota_bytes"]) == (0, 1000)
    assert (await create(client, user, 600)).status == 201
    await insert_file(conn, user.id, status="FAILED", size=10_000)  # its blob is gone: it does not count
    r = await create(client, user, 600)
    body = await r.json()
    assert r.status == 413 and body["code"] == "QUOTA_EXCEEDED"
    assert (body["quota_bytes"], body["usage_bytes"], body["requested_bytes"]) == (1000, 600, 600)
    r = await client.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Length": "600"})
    assert r.status == 413 and (await r.json())["code"] == "QUOTA_EXCEEDED" and r.headers["Tus-Resumable"] == "1.0.0"
    # A deferred length is checked once it is declared.
    r = await client.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Defer-Length": "1"})
    assert r.status == 201
    upload_id = r.headers["Location"].rsplit("/", 1)[-1]
    r = await client.patch(
        f"/api/tus/{upload_id}",
        data=b"",
        headers={
            **user.headers,
            **TUS,
            "Upload-Offset": "0",
            "Upload-Length": "600",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert r.status == 413 and (await r.json())["code"] == "QUOTA_EXCEEDED"
    assert (
        await conn.fetchval("SELECT count(*) FROM files WHERE uploaded_by_id = $1 AND status <> 'FAILED'", user.id) == 2
    )  # the first upload and the deferred one, still without a length
    assert (await create(client, user, 400)).status == 201  # exactly up to the quota is fine
    assert (await me(client, user))["usage_bytes"] == 1000


async def test_an_admin_sets_a_users_own_quota(client, user, admin) -> None:
    assert (await create(client, user, 900)).status == 201
    assert (await create(client, user, 900)).status == 413
    r = await client.patch(f"/api/users/{user.id}", headers=admin.headers, json={"quota_bytes": 5000})
    assert r.status == 200 and (await r.json())["quota_bytes"] == 5000
    assert (await create(client, user, 900)).status == 201
    assert ((await me(client, user))["usage_bytes"], (await me(client, user))["quota_bytes"]) == (1800, 5000)
    r = await client.patch(f"/api/users/{user.id}", headers=admin.headers, json={"quota_bytes": None})
    assert r.status == 200 and (await r.json())["quota_bytes"] is None  # back to USER_QUOTA
    assert (await me(client, user))["quota_bytes"] == 1000
    for bad in ({"quota_bytes": -1}, {"quota_bytes": "1GiB"}, {"quota_bytes": 1.5}, {"quota_bytes": True}):
        r = await client.patch(f"/api/users/{user.id}", headers=admin.headers, json=bad)
        assert r.status == 422 and (await r.json())["field"] == "quota_bytes", bad
    r = await client.patch("/api/users/nobody", headers=admin.headers, json={"quota_bytes": 1})
    assert r.status == 404
    r = await client.patch(f"/api/users/{user.id}", headers=user.headers, json={"quota_bytes": 10**9})
    assert r.status == 403


async def test_concurrent_creations_cannot_both_take_the_last_bytes(client, user) -> None:
    responses = await asyncio.gather(*(create(client, user, 300) for _ in range(6)))
    assert sorted(r.status for r in responses) == [201, 201, 201, 413, 413, 413]
    for r in responses:
        r.release()
