"""The native upload protocol over a real socket: sessions, chunk rules, resume, complete, abort."""

from __future__ import annotations

import asyncio
import io
import os

from tests.support import insert_post
from tests.uploading import UPLOAD_ENV, create, put_chunks, sha256, stored

CHUNK = 64 * 1024


SETTINGS_ENV = {**UPLOAD_ENV, "MAX_UPLOAD_SIZE": "10MiB"}


async def test_create_upload(client, user, conn) -> None:
    body = await create(client, user, b"x" * (CHUNK * 2 + 10), "report.pdf", sha256="A" * 64)
    assert body["status"] == "UPLOADING" and body["chunk_size"] == CHUNK and body["total_chunks"] == 3
    assert body["bytes_received"] == 0 and body["expires_at"] and body["sha256"] == "a" * 64
    assert body["mimetype"] == "application/pdf"  # guessed from the name: a hint until the worker reads the bytes
    row = await conn.fetchrow("SELECT filename, path, type, original_name FROM files WHERE id = $1", body["id"])
    assert row["original_name"] == "report.pdf" and row["type"] == "DOCUMENT"
    assert "report" not in row["filename"] and row["path"].endswith(row["filename"])  # generated blob names


async def test_create_upload_refusals(client, user) -> None:
    cases = [
        ({"size": 10}, 422, "VALIDATION_FAILED"),
        ({"filename": "", "size": 10}, 422, "VALIDATION_FAILED"),
        ({"filename": "a\x00b", "size": 10}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": -1}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": True}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": "10"}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": 10 * 1024 * 1024 + 1}, 413, "UPLOAD_TOO_LARGE"),
        ({"filename": "a", "size": 10, "chunk_size": 2 * 1024 * 1024}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": 10, "chunk_size": 0}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": 10 * 1024 * 1024, "chunk_size": 1}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": 10, "sha256": "nothex"}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": 10, "mimetype": "no slash"}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": 10, "post_id": "no-such-post"}, 422, "VALIDATION_FAILED"),
        ({"filename": "a", "size": 10, "owner": "someone"}, 422, "VALIDATION_FAILED"),  # unknown fields are refused
    ]
    for payload, status, code in cases:
        r = await client.post("/api/uploads", json=payload, headers=user.headers)
        assert r.status == status, payload
        assert (await r.json())["code"] == code, payload
    r = await client.post(
        "/api/uploads", data=b"{not json", headers={**user.headers, "Content-Type": "application/json"}
    )
    assert r.status == 400 and (await r.json())["code"] == "INVALID_JSON"
    # A body that is not declared JSON is refused as such, as on every JSON endpoint (validation.read_json).
    r = await client.post("/api/uploads", data=b'{"filename": "a", "size": 1}', headers=user.headers)
    assert r.status == 415 and (await r.json())["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert (await client.post("/api/uploads", json={"filename": "a", "size": 1})).status == 401


async def test_attach_to_own_post_only(client, user, make_user, conn) -> None:
    other = await make_user()
    post_id = await insert_post(conn, user.id, "p", published=False)
    ok = await create(client, user, b"abc", post_id=post_id)
    assert await conn.fetchval("SELECT post_id FROM files WHERE id = $1", ok["id"]) == post_id
    r = await client.post("/api/uploads", json={"filename": "a", "size": 3, "post_id": post_id}, headers=other.headers)
    assert r.status == 422 and (await r.json())["field"] == "post_id"


async def test_empty_file_is_complete_at_once(client, user) -> None:
    body = await create(client, user, b"", "empty.txt")
    assert body["status"] == "PROCESSING" and body["total_chunks"] == 0
    r = await client.get(f"/api/uploads/{body['id']}", headers=user.headers)
    assert (await r.json())["missing"] == []


async def test_resume_after_gaps(client, user, conn) -> None:
    data = os.urandom(CHUNK * 5 + 123)
    upload = await create(client, user, data)
    await put_chunks(client, user, upload, data, indexes=[0, 2, 5])
    r = await client.get(f"/api/uploads/{upload['id']}", headers=user.headers)
    state = await r.json()
    assert state["received"] == [0, 2, 5] and state["missing"] == [1, 3, 4]
    assert state["bytes_received"] == 2 * CHUNK + 123 and state["total_chunks"] == 6

    r = await client.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)
    problem = await r.json()
    assert r.status == 409 and problem["code"] == "UPLOAD_INCOMPLETE" and problem["missing"] == [1, 3, 4]
    assert await conn.fetchval("SELECT status FROM files WHERE id = $1", upload["id"]) == "UPLOADING"

    await put_chunks(client, user, upload, data, indexes=state["missing"])
    r = await client.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)
    assert r.status == 202 and (await r.json())["status"] == "PROCESSING"
    assert r.headers["Location"] == f"/api/files/{upload['id']}"
    assert await conn.fetchval("SELECT status FROM files WHERE id = $1", upload["id"]) == "PROCESSING"
    stored = await conn.fetchval(
        "SELECT string_agg(data, ''::bytea ORDER BY chunk_index) FROM file_chunks WHERE file_id = $1", upload["id"]
    )
    assert sha256(stored) == sha256(data)
    again = await client.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers)
    assert again.status == 202  # completing twice is harmless
    r = await client.put(f"/api/uploads/{upload['id']}/chunks/0", data=data[:CHUNK], headers=user.headers)
    assert r.status == 409 and (await r.json())["code"] == "UPLOAD_CLOSED"


async def test_every_bad_chunk_is_refused_and_changes_nothing(client, user, conn) -> None:
    data = os.urandom(CHUNK * 2 + 100)
    upload = await create(client, user, data)
    url = f"/api/uploads/{upload['id']}/chunks"
    await put_chunks(client, user, upload, data, indexes=[0])
    before = (
        await stored(conn, upload["id"]),
        await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", upload["id"]),
    )

    async def chunked(body: bytes):  # no Content-Length: the limit is enforced while reading
        yield body

    cases = [
        (f"{url}/1", data[CHUNK : 2 * CHUNK - 1], {}, 400, "CHUNK_SIZE_MISMATCH"),  # short
        (f"{url}/1", data[CHUNK : 2 * CHUNK + 1], {}, 400, "CHUNK_SIZE_MISMATCH"),  # long
        (f"{url}/2", data[2 * CHUNK :] + b"x", {}, 400, "CHUNK_SIZE_MISMATCH"),  # last chunk is the remainder
        (f"{url}/2", data[2 * CHUNK : 2 * CHUNK + 50], {}, 400, "CHUNK_SIZE_MISMATCH"),
        (f"{url}/1", chunked(data[CHUNK : 2 * CHUNK] + b"tail"), {}, 400, "CHUNK_SIZE_MISMATCH"),
        (f"{url}/1", chunked(os.urandom(2 * 1024 * 1024)), {}, 400, "CHUNK_SIZE_MISMATCH"),
        (f"{url}/1", io.BytesIO(os.urandom(1024 * 1024 + 1)), {}, 413, "CHUNK_TOO_LARGE"),
        (f"{url}/3", data[:100], {}, 409, "CHUNK_OUT_OF_RANGE"),
        # A malformed index is a bad path value, as everywhere else (was 400 BAD_REQUEST before validation.py).
        (f"{url}/-1", data[:CHUNK], {}, 422, "VALIDATION_FAILED"),
        (f"{url}/x", data[:CHUNK], {}, 422, "VALIDATION_FAILED"),
        (f"{url}/1", data[CHUNK : 2 * CHUNK], {"Content-SHA256": sha256(b"other")}, 422, "CHECKSUM_MISMATCH"),
        (f"{url}/1", data[CHUNK : 2 * CHUNK], {"Content-SHA256": "zz"}, 400, "BAD_REQUEST"),
        (f"{url}/0", os.urandom(CHUNK), {}, 409, "CHUNK_CONFLICT"),  # different bytes, stored index
    ]
    for path, body, headers, status, code in cases:
        r = await client.put(path, data=body, headers={**user.headers, **headers})
        assert r.status == status, (path, code, await r.text())
        assert (await r.json())["code"] == code
    after = (
        await stored(conn, upload["id"]),
        await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", upload["id"]),
    )
    assert after == before

    r = await client.put(f"{url}/0", data=data[:CHUNK], headers=user.headers)  # identical repeat
    assert r.status == 200 and (await r.json())["bytes_received"] == CHUNK
    assert (
        await stored(conn, upload["id"]),
        await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", upload["id"]),
    ) == before


async def test_parallel_puts_keep_bytes_received_exact(client, user, conn) -> None:
    data = os.urandom(CHUNK * 12)
    upload = await create(client, user, data)
    # Every chunk twice, all at once: each counts exactly once.
    await asyncio.gather(
        *(
            client.put(
                f"/api/uploads/{upload['id']}/chunks/{i}", headers=user.headers, data=data[i * CHUNK : (i + 1) * CHUNK]
            )
            for i in list(range(12)) * 2
        )
    )
    assert await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", upload["id"]) == len(data)
    assert len(await stored(conn, upload["id"])) == 12


async def test_disconnect_mid_chunk_leaves_no_row(client, user, conn) -> None:
    data = os.urandom(CHUNK)
    upload = await create(client, user, data + b"more")
    _reader, writer = await asyncio.open_connection(client.host, client.port)
    head = (
        f"PUT /api/uploads/{upload['id']}/chunks/0 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {user.headers['Authorization']}\r\nContent-Length: {CHUNK}\r\n\r\n"
    )
    writer.write(head.encode() + data[: CHUNK // 2])
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)
    assert await stored(conn, upload["id"]) == []
    assert await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", upload["id"]) == 0
    r = await client.put(f"/api/uploads/{upload['id']}/chunks/0", data=data, headers=user.headers)
    assert r.status == 201  # the client resumes with the same chunk


async def test_only_the_owner_touches_an_upload(client, user, make_user, admin) -> None:
    data = os.urandom(100)
    upload = await create(client, user, data)
    for someone in (await make_user(), admin):
        h = someone.headers
        for r in (
            await client.get(f"/api/uploads/{upload['id']}", headers=h),
            await client.put(f"/api/uploads/{upload['id']}/chunks/0", data=data, headers=h),
            await client.post(f"/api/uploads/{upload['id']}/complete", headers=h),
            await client.delete(f"/api/uploads/{upload['id']}", headers=h),
        ):
            assert r.status == 404 and (await r.json())["code"] == "UPLOAD_NOT_FOUND"
    assert (await client.get("/api/uploads/nope", headers=user.headers)).status == 404


async def test_expired_upload_is_gone(client, user, conn) -> None:
    data = os.urandom(100)
    upload = await create(client, user, data)
    await conn.execute("UPDATE files SET expires_at = now() - interval '1 second' WHERE id = $1", upload["id"])
    for r in (
        await client.put(f"/api/uploads/{upload['id']}/chunks/0", data=data, headers=user.headers),
        await client.post(f"/api/uploads/{upload['id']}/complete", headers=user.headers),
        await client.get(f"/api/uploads/{upload['id']}", headers=user.headers),
    ):
        assert r.status == 410 and (await r.json())["code"] == "UPLOAD_EXPIRED"
    assert (await client.delete(f"/api/uploads/{upload['id']}", headers=user.headers)).status == 204


async def test_abort_removes_row_and_chunks(client, user, conn) -> None:
    data = os.urandom(CHUNK * 2)
    upload = await create(client, user, data)
    await put_chunks(client, user, upload, data, indexes=[1])
    r = await client.delete(f"/api/uploads/{upload['id']}", headers=user.headers)
    assert r.status == 204
    assert await conn.fetchval("SELECT count(*) FROM files WHERE id = $1", upload["id"]) == 0
    assert await stored(conn, upload["id"]) == []
    assert (await client.get(f"/api/uploads/{upload['id']}", headers=user.headers)).status == 404


async def test_sha256_given_at_complete(client, user, conn) -> None:
    """A client may start sending before it has hashed the file: the whole file's SHA-256 comes with
    complete, is kept for the worker's check, and must agree with one declared at creation."""
    data = os.urandom(CHUNK * 2 + 7)
    upload = await create(client, user, data)
    await put_chunks(client, user, upload, data, checksum=False)
    complete = f"/api/uploads/{upload['id']}/complete"
    r = await client.post(complete, json={"sha256": "not hex"}, headers=user.headers)
    assert r.status == 422 and (await r.json())["field"] == "sha256"
    r = await client.post(complete, json={"sha256": sha256(data).upper()}, headers=user.headers)
    assert r.status == 202 and (await r.json())["status"] == "PROCESSING"
    assert await conn.fetchval("SELECT sha256 FROM files WHERE id = $1", upload["id"]) == sha256(data)

    declared = await create(client, user, data, sha256=sha256(data))
    await put_chunks(client, user, declared, data, checksum=False)
    r = await client.post(
        f"/api/uploads/{declared['id']}/complete", json={"sha256": sha256(b"other")}, headers=user.headers
    )
    assert r.status == 422 and (await r.json())["code"] == "VALIDATION_FAILED"
    assert await conn.fetchval("SELECT status FROM files WHERE id = $1", declared["id"]) == "UPLOADING"
    r = await client.post(
        f"/api/uploads/{declared['id']}/complete", json={"sha256": sha256(data)}, headers=user.headers
    )
    assert r.status == 202
