"""The IETF draft's uploads for real: interrupted and resumed with identical bytes after processing, two
appends never interleaving, integrity digests (RFC 9530) verified, and the Upload-Limit limits enforced."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os

from service.keys import tus_locks_key
from tests.rufh_support import (
    DRAFT,
    PARTIAL,
    PROBLEMS,
    Exchange,
    append,
    create,
    exchange,
    head,
    id_of,
    open_append,
    path_of,
    rufh_app,
    wait_processed,
)
from tests.tus_support import CHUNK, file_row, stored_bytes, unlocked, until


def digest(algorithm: str, data: bytes) -> str:
    return f"{algorithm}=:{base64.b64encode(hashlib.new(algorithm.replace('-', ''), data).digest()).decode()}:"


async def _offset(conn, file_id: str) -> int:
    return (await file_row(conn, file_id))["bytes_received"]


# interruption and resumption


async def test_an_interrupted_creation_resumes_from_the_104s_location(rufh, user, conn) -> None:
    """The draft's example 1: the whole file in the creation request, the link dies, the client asks
    for the offset at the URL the 104 gave it and sends the rest; the processed file is the file."""
    data = os.urandom(6 * CHUNK + 4321)
    sent = 3 * CHUNK + 1000
    request = await Exchange.open(
        rufh,
        "POST",
        "/api/tus/",
        {
            **user.headers,
            **DRAFT,
            "Upload-Complete": "?1",
            "Content-Length": str(len(data)),
            "Content-Disposition": 'inline; filename="holiday.bin"',
        },
    )
    try:
        interim = await request.interim()  # sent before any byte of the body was read
        assert interim.status == 104
        location = interim.headers["location"]
        await request.send(data[:sent])
        await until(lambda: _is(conn, id_of(location), 3 * CHUNK))  # whole chunk rows commit as they fill
    finally:
        await request.close()  # the connection drops mid-body: the part of a chunk row is kept too
    await until(lambda: _is(conn, id_of(location), sent))

    r = await head(rufh, user, path_of(location))
    assert r.status == 204 and r.sf("Upload-Offset") == (sent, {}) and r.sf("Upload-Complete") == (False, {})
    assert r.sf("Upload-Length") == (len(data), {})  # recorded from Upload-Complete: ?1 and Content-Length
    assert await stored_bytes(conn, id_of(location)) == data[:sent]

    r = await append(rufh, user, path_of(location), sent, data[sent:], complete=True)
    assert r.status == 200 and r.sf("Upload-Complete") == (True, {})
    done = await wait_processed(rufh, user, id_of(location))
    assert done["status"] == "COMPLETED" and done["size"] == len(data)
    assert done["metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    r = await rufh.get(f"/api/files/{id_of(location)}/content", headers=user.headers)
    assert hashlib.sha256(await r.read()).hexdigest() == hashlib.sha256(data).hexdigest()


async def _is(conn, file_id: str, offset: int) -> bool:
    return await _offset(conn, file_id) == offset


async def test_an_interrupted_append_keeps_every_byte_and_resumes(rufh, user, conn) -> None:
    data = os.urandom(4 * CHUNK + 77)
    r = await create(rufh, user, headers={"Upload-Length": str(len(data))})
    path = path_of(r.headers["location"])
    sent = 2 * CHUNK + 5
    request = await open_append(rufh, user, path, len(data), complete=True)
    try:
        await request.send(data[:sent])
        await until(lambda: _is(conn, id_of(path), 2 * CHUNK))
    finally:
        await request.close()
    await until(lambda: _is(conn, id_of(path), sent))
    r = await head(rufh, user, path)
    assert r.sf("Upload-Offset") == (sent, {})
    r = await append(rufh, user, path, sent, data[sent:], complete=True)
    assert r.status == 200
    done = await wait_processed(rufh, user, id_of(path))
    assert done["metadata"]["sha256"] == hashlib.sha256(data).hexdigest()


async def test_progress_104s_report_the_offset_while_content_arrives(rufh, user, conn) -> None:
    data = os.urandom(3 * CHUNK)
    r = await create(rufh, user)
    path = path_of(r.headers["location"])
    request = await open_append(rufh, user, path, len(data), complete=False)
    try:
        for i in range(1, 4):
            await request.send(data[(i - 1) * CHUNK : i * CHUNK])
            await until(lambda stored=i * CHUNK: _is(conn, id_of(path), stored))
            await asyncio.sleep(1.1)  # progress is reported at most once a second
        response = await request.final()
    finally:
        await request.close()
    assert response.status == 204
    offsets = [int(i.headers["upload-offset"]) for i in response.interim]
    assert offsets and offsets == sorted(offsets) and set(offsets) <= {CHUNK, 2 * CHUNK, 3 * CHUNK}
    assert all(i.status == 104 and "location" not in i.headers for i in response.interim)


async def test_two_concurrent_appends_never_interleave(rufh, user, conn) -> None:
    pieces, size = 100, 1000  # the first body trickles in for 3 s or more, longer than a request waits for the lock
    rufh.server.app[tus_locks_key].stall_after = 5.0  # a loaded machine must not make the trickle look stalled
    first_body, second_body = b"A" * pieces * size, b"B" * pieces * size
    r = await create(rufh, user)
    path = path_of(r.headers["location"])
    first = await open_append(rufh, user, path, len(first_body), complete=True)

    async def trickle() -> None:
        for i in range(pieces):
            await first.send(first_body[i * size : (i + 1) * size])
            await asyncio.sleep(0.03)

    sender = asyncio.create_task(trickle())
    try:
        await until(lambda: _locked(conn, id_of(path)))
        second = await append(rufh, user, path, 0, second_body, complete=True)
        assert second.status == 423 and second.json()["code"] == "TUS_UPLOAD_LOCKED"  # an active writer keeps it
        await sender
        response = await first.final()
        assert response.status == 200
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await first.close()
    assert (await file_row(conn, id_of(path)))["bytes_received"] == len(first_body)
    done = await wait_processed(rufh, user, id_of(path))
    assert done["metadata"]["sha256"] == hashlib.sha256(first_body).hexdigest()


async def _locked(conn, file_id: str) -> bool:
    return not await unlocked(conn, file_id)


# digests


async def test_content_digest_is_verified_and_a_mismatch_stores_nothing(rufh, user, conn) -> None:
    r = await create(rufh, user, b"first", headers={"Content-Digest": digest("sha-256", b"first")})
    assert r.status == 201
    path = path_of(r.headers["location"])
    r = await append(rufh, user, path, 5, b"second", headers={"Content-Digest": digest("sha-256", b"SECOND")})
    assert r.status == 400
    problem = r.json()
    assert problem["type"] == PROBLEMS + "digest-mismatching-value" and problem["algorithm"] == "sha-256"
    assert problem["provided-digest"] == digest("sha-256", b"SECOND").split("=", 1)[1]
    assert await stored_bytes(conn, id_of(path)) == b"first"
    r = await append(rufh, user, path, 5, b"second", headers={"Content-Digest": digest("sha-512", b"second")})
    assert r.status == 204 and await stored_bytes(conn, id_of(path)) == b"firstsecond"


async def test_malformed_or_unknown_digests_are_refused(rufh, user, conn) -> None:
    short = "sha-256=:" + base64.b64encode(b"\0" * 16).decode() + ":"
    cases = {
        short: "digest-invalid-value",
        "sha-256=12": "digest-invalid-value",
        "md5=:" + base64.b64encode(b"\0" * 16).decode() + ":": "digest-unsupported-algorithm",
    }
    for value, problem in cases.items():
        r = await create(rufh, user, b"bytes", headers={"Content-Digest": value})
        assert r.status == 400 and r.json()["type"] == PROBLEMS + problem, value
    assert r.headers["want-content-digest"].startswith("sha-256=")
    r = await create(rufh, user, b"bytes", headers={"Content-Digest": "sha-256=:not base64"})
    assert r.status == 422 and r.json()["code"] == "VALIDATION_FAILED"
    assert await conn.fetchval("SELECT count(*) FROM files") == 0


async def test_repr_digest_is_checked_once_the_upload_is_complete(rufh, user) -> None:
    data = os.urandom(CHUNK + 3)
    r = await create(rufh, user, data, complete=True, headers={"Repr-Digest": digest("sha-256", data)})
    assert (await wait_processed(rufh, user, r.json()["id"]))["status"] == "COMPLETED"
    r = await create(rufh, user, data, complete=True, headers={"Repr-Digest": digest("sha-256", data[:-1])})
    failed = await wait_processed(rufh, user, r.json()["id"])
    assert failed["status"] == "FAILED" and "sha256" in failed["error"]


# limits


async def test_the_upload_limits_are_enforced_and_announced(
    aiohttp_client,
    database_url,
    storage_dir,
    user,
    conn,
) -> None:
    server = await aiohttp_client(
        rufh_app(database_url, storage_dir, MIN_UPLOAD_SIZE="10", MAX_APPEND_SIZE="100", MIN_APPEND_SIZE="20")
    )
    r = await exchange(server, "OPTIONS", "/api/tus/", {})
    limits = r.sf("Upload-Limit", "dictionary")
    assert {k: v[0] for k, v in limits.items()} == {
        "max-size": 4 * 1024 * 1024,
        "max-append-size": 100,
        "min-size": 10,
        "min-append-size": 20,
        "max-age": 86400,
    }
    r = await create(server, user, b"", headers={"Upload-Length": "5"})
    assert r.status == 400 and r.json()["code"] == "UPLOAD_TOO_SMALL"
    r = await create(server, user)  # min-size needs a length to check
    assert r.status == 400 and r.json()["code"] == "UPLOAD_TOO_SMALL"
    r = await create(server, user, headers={"Upload-Length": str(5 * 1024 * 1024)})
    assert r.status == 413 and "max-size=" in r.headers["upload-limit"]
    assert await conn.fetchval("SELECT count(*) FROM files") == 0

    r = await create(server, user, b"x" * 30, headers={"Upload-Length": "200"})
    path = path_of(r.headers["location"])
    r = await append(server, user, path, 30, b"y" * 101)
    assert (
        r.status == 413
        and r.json()["code"] == "APPEND_TOO_LARGE"
        and "max-append-size=100" in r.headers["upload-limit"]
    )
    r = await append(server, user, path, 30, b"y" * 19)
    assert r.status == 400 and r.json()["code"] == "APPEND_TOO_SMALL"
    r = await append(server, user, path, 30, b"y" * 100)
    assert r.status == 204
    r = await append(server, user, path, 130, b"z" * 70, complete=True)
    assert r.status == 200
    r = await append(server, user, path, 200, b"")
    assert r.status == 400  # complete now
    assert await _offset(conn, id_of(path)) == 200


async def test_the_quota_counts_at_creation_and_when_an_open_length_closes(
    aiohttp_client,
    database_url,
    storage_dir,
    user,
    conn,
) -> None:
    server = await aiohttp_client(rufh_app(database_url, storage_dir, USER_QUOTA="1000"))
    r = await create(server, user, headers={"Upload-Length": "1200"})
    assert r.status == 413 and r.json()["code"] == "QUOTA_EXCEEDED" and not r.interim
    r = await create(server, user, b"x" * 600)  # no length: nothing counted yet
    path = path_of(r.headers["location"])
    r = await append(server, user, path, 600, b"y" * 500, complete=True)  # Content-Length: the length is 1100
    assert r.status == 413 and r.json()["code"] == "QUOTA_EXCEEDED"
    assert (await file_row(conn, id_of(path)))["bytes_received"] == 600  # refused before the body was read
    # Chunked: the length is known only once the body has ended, and is checked before the upload completes.
    request = await Exchange.open(
        server,
        "PATCH",
        path,
        {
            **user.headers,
            **DRAFT,
            **PARTIAL,
            "Upload-Offset": "600",
            "Upload-Complete": "?1",
            "Transfer-Encoding": "chunked",
        },
    )
    try:
        await request.send(b"1f4\r\n" + b"y" * 500 + b"\r\n0\r\n\r\n")
        r = await request.final()
    finally:
        await request.close()
    assert r.status == 413 and r.json()["code"] == "QUOTA_EXCEEDED"
    row = await file_row(conn, id_of(path))
    assert (row["status"], row["bytes_received"], row["size_deferred"]) == ("UPLOADING", 1100, True)
    r = await exchange(server, "DELETE", path, {**user.headers, **DRAFT})
    assert r.status == 204
    r = await create(server, user, b"z" * 900, complete=True)
    assert r.status == 201 and r.json()["size"] == 900
