"""Hostile input on every endpoint: a 4xx problem+json that says what is wrong, never a 500, and an
existing upload left exactly as it was (bytes_received, chunk rows)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import logging
import re
import time
from pathlib import Path
from urllib.parse import quote

import asyncpg
import jwt

from service import storage
from tests.support import JWT_SECRET, insert_file, insert_post
from tests.uploading import UPLOAD_ENV, create, put_chunks, wait_for_status

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
JSON = {"Content-Type": "application/json"}
TUS = {"Tus-Resumable": "1.0.0"}
STREAM = {"Content-Type": "application/offset+octet-stream"}
CHUNK = 64 * 1024


SETTINGS_ENV = UPLOAD_ENV


async def problem(r, *statuses: int) -> dict:
    """The response is an RFC 9457 problem with one of `statuses` (any 4xx when none is given)."""
    text = await r.text()
    assert (r.status in statuses) if statuses else (400 <= r.status < 500), (r.method, r.url, r.status, text)
    assert r.content_type == "application/problem+json", (r.url, r.status, text)
    body = json.loads(text)
    assert body.keys() >= PROBLEM_KEYS and body["status"] == r.status, body
    return body


async def upload_state(conn: asyncpg.Connection, file_id: str) -> tuple:
    """Everything a refused request must leave alone."""
    row = await conn.fetchrow(
        "SELECT status, size, bytes_received, original_name, updated_at FROM files WHERE id = $1", file_id
    )
    chunks = await conn.fetch(
        "SELECT chunk_index, sha256(data) AS digest FROM file_chunks WHERE file_id = $1 ORDER BY chunk_index", file_id
    )
    return tuple(row.values()) if row else None, [tuple(c.values()) for c in chunks]


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def assert_safe_disposition(header: str, name: str) -> None:
    assert "\r" not in header and "\n" not in header and "\x00" not in header, header
    assert header.startswith('attachment; filename="'), header
    fallback = header.split('filename="', 1)[1].split('"; filename*=', 1)[0]
    assert '"' not in fallback and "\\" not in fallback and all(0x20 <= ord(c) < 0x7F for c in fallback), header
    assert header.endswith("filename*=UTF-8''" + quote(name, safe="")), header


# filenames --------------------------------------------------------------------------------------

NAMES_ACCEPTED = [
    "../../etc/passwd",
    "..\\..\\x",
    "/etc/passwd",
    "C:\\Windows\\win.ini",
    "🦄 naïve.png",
    "...",
    "..",
    'say "hi"; x=1 %41.txt',
    "日本語 ファイル.txt",
]
NAMES_REFUSED = [
    "",
    "   ",
    "a\x00b",
    "report\r\nX-Injected: yes",
    "line\nbreak",
    "tab\there",
    "x" * 10_000,
    "evil\u202egnp.exe",
    "zero\u200bwidth",
    "line\u2028separator",
]


async def test_native_filenames_never_reach_the_disk_or_the_headers(served, user, conn, storage_dir) -> None:
    for name in NAMES_REFUSED:
        r = await served.post("/api/uploads", json={"filename": name, "size": 5}, headers=user.headers)
        assert (await problem(r, 422))["field"] == "filename", repr(name[:20])
    assert await conn.fetchval("SELECT count(*) FROM files") == 0
    for name in NAMES_ACCEPTED:
        data = b"bytes of " + name.encode()
        created = await create(served, user, data, name)
        await put_chunks(served, user, created, data)
        assert (await served.post(f"/api/uploads/{created['id']}/complete", headers=user.headers)).status == 202
        await check_stored_and_served(served, user, conn, storage_dir, created["id"], name, data)


async def test_tus_filenames_are_cleaned(served, user, conn, storage_dir) -> None:
    # tus metadata is the client's to send as it likes: path and control characters are dropped, not refused.
    # (A header above 8190 bytes is refused by aiohttp's parser before any middleware, as a text/plain 400.)
    cleaned = {
        "../../etc/passwd": "passwd",
        "..\\..\\x": "x",
        "/etc/": "upload",
        "a\x00b": "ab",
        "report\r\nX-Injected: yes": "reportX-Injected: yes",
        "evil\u202egnp.exe": "evilgnp.exe",
        "x" * 5_000: "x" * 255,
        "": "upload",
        "..": "..",
        "🦄.png": "🦄.png",
    }
    for raw, shown in cleaned.items():
        data = b"tus bytes"
        r = await served.post(
            "/api/tus/",
            headers={
                **user.headers,
                **TUS,
                **STREAM,
                "Upload-Length": str(len(data)),
                "Upload-Metadata": f"filename {b64(raw)}",
            },
            data=data,
        )
        assert r.status == 201, await r.text()
        file_id = r.headers["Location"].rsplit("/", 1)[-1]
        await check_stored_and_served(served, user, conn, storage_dir, file_id, shown, data)
    not_utf8 = b64(b"\xff\xfe")
    for metadata in (
        "filename %%%",
        f"filename {not_utf8}",
        "filename",
        "fi,le x",
        f"filename {b64('a')},filename {b64('b')}",
    ):
        r = await served.post(
            "/api/tus/", headers={**user.headers, **TUS, "Upload-Length": "3", "Upload-Metadata": metadata}
        )
        if metadata == "filename":  # a key without a value is allowed: the name falls back
            assert r.status == 201
            continue
        assert (await problem(r, 400))["code"] == "TUS_INVALID_METADATA", metadata
    assert await conn.fetchval("SELECT count(*) FROM files") == len(cleaned) + 1


async def check_stored_and_served(
    client,
    user,
    conn,
    storage_dir: Path,
    file_id: str,
    name: str,
    data: bytes,
) -> None:
    body = await wait_for_status(client, user, file_id)
    assert body["status"] == "COMPLETED" and body["original_name"] == name, body
    row = await conn.fetchrow("SELECT filename, path FROM files WHERE id = $1", file_id)
    blob = storage.LocalStore(storage_dir).path(row["path"])
    assert blob.resolve().is_relative_to(storage_dir.resolve()) and blob.read_bytes() == data
    assert re.fullmatch(r"[0-9a-f]{32}", row["filename"]) and row["path"] == storage.blob_key(row["filename"])
    r = await client.get(f"/api/files/{file_id}/content", headers=user.headers)
    assert r.status == 200 and await r.read() == data
    assert_safe_disposition(r.headers["Content-Disposition"], name)


# sizes, offsets, indexes ------------------------------------------------------------------------


async def test_sizes_must_be_plain_integers(client, user, conn) -> None:
    sizes: tuple[object, ...] = (-1, 1.5, "10", True, None, [], {}, "1e3")
    for size in sizes:
        r = await client.post("/api/uploads", json={"filename": "a", "size": size}, headers=user.headers)
        assert (await problem(r, 422))["field"] == "size", size
    for size in (2**63, 2**64, 10**400):
        r = await client.post("/api/uploads", json={"filename": "a", "size": size}, headers=user.headers)
        assert (await problem(r, 413))["code"] == "UPLOAD_TOO_LARGE", size
    for chunk_size in (-1, 0, 2**63, 1.5, "1", True, [1]):
        r = await client.post(
            "/api/uploads", json={"filename": "a", "size": 10, "chunk_size": chunk_size}, headers=user.headers
        )
        assert (await problem(r, 422))["field"] == "chunk_size", chunk_size
    for raw in (
        b'{"filename": "a", "size": 1e400}',
        b'{"filename": "a", "size": Infinity}',
        b'{"filename": "a", "size": ' + b"9" * 5000 + b"}",
    ):  # past Python's 4300-digit int limit
        r = await client.post("/api/uploads", data=raw, headers={**user.headers, **JSON})
        await problem(r, 400, 422)
    assert await conn.fetchval("SELECT count(*) FROM files") == 0
    # A number with a zero fractional part is an integer (JSON Schema, as /openapi.json says): 10.0 is 10.
    r = await client.post("/api/uploads", json={"filename": "a", "size": 10.0}, headers=user.headers)
    assert r.status == 201 and (await r.json())["size"] == 10


async def test_bad_chunk_indexes_change_nothing(client, user, conn) -> None:
    data = b"z" * (CHUNK * 2 + 7)
    upload = await create(client, user, data)
    await put_chunks(client, user, upload, data, indexes=[1])
    before = await upload_state(conn, upload["id"])
    base = f"/api/uploads/{upload['id']}/chunks"
    for index in ("-1", "1e3", "%EF%BC%90", "1" * 40, "+1", "1.0", "0x1", "%200", "2147483648", "9" * 19, "%00"):
        r = await client.put(f"{base}/{index}", data=data[:CHUNK], headers=user.headers)
        assert (await problem(r, 422))["field"] == "index", index
    r = await client.put(f"{base}/99999", data=data[:CHUNK], headers=user.headers)
    assert (await problem(r, 409))["code"] == "CHUNK_OUT_OF_RANGE"
    r = await client.put(f"{base}/0", data=b"", headers=user.headers)
    assert (await problem(r, 400))["code"] == "CHUNK_SIZE_MISMATCH"
    assert await upload_state(conn, upload["id"]) == before


async def raw_request(client, head: str, body: bytes, *, half_close: bool = False) -> bytes:
    """One request written byte for byte, so that Content-Length can lie; the raw answer (b"" if none).
    Read by its own Content-Length: the server may keep the connection open to drain the body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        if half_close:
            writer.write_eof()
        try:
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except asyncio.IncompleteReadError as e:
            return e.partial
        length = re.search(rb"(?i)content-length: *([0-9]+)", answer)
        return answer + (await reader.readexactly(int(length.group(1))) if length else b"")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_content_length_lies_store_nothing(client, user, conn, caplog) -> None:
    data = b"q" * (CHUNK + 3)
    upload = await create(client, user, data)
    before = await upload_state(conn, upload["id"])
    path = f"/api/uploads/{upload['id']}/chunks/0"

    def head(length: int) -> str:
        return (
            f"PUT {path} HTTP/1.1\nHost: x\nAuthorization: Bearer {user.token}\nConnection: close\n"
            f"Content-Type: application/octet-stream\nContent-Length: {length}\n"
        )

    # Content-Length above the body: refused on the header, before a byte is read.
    answer = await raw_request(client, head(CHUNK + 10), data[:CHUNK])
    assert answer.startswith(b"HTTP/1.1 400") and b"CHUNK_SIZE_MISMATCH" in answer, answer[:300]
    # Below it: the bytes past Content-Length are a malformed next request, which aiohttp's parser
    # answers with its own 400 (before any middleware); either way nothing is stored.
    for length in (CHUNK - 10, 0):
        answer = await raw_request(client, head(length), data[:CHUNK])
        assert b" 400 " in answer.split(b"\r\n", 1)[0], answer[:300]
    # The body stops short of its Content-Length and the client stops sending: nothing is kept.
    # The server sees the connection end mid-body: there is nobody to answer; it is logged as 499, not 500.
    with caplog.at_level(logging.INFO, logger="service.http"):
        answer = await raw_request(client, head(CHUNK), data[: CHUNK // 2], half_close=True)
        await asyncio.sleep(0.2)
    assert answer == b""
    logged = [r.status for r in caplog.records if getattr(r, "action", None) == "request"]
    assert logged == [499], logged
    assert await upload_state(conn, upload["id"]) == before


async def test_json_bodies_beyond_the_limit(client, user) -> None:
    big = json.dumps({"title": "x" * (2 * 1024 * 1024)}).encode()
    for path, headers in (("/api/posts", user.headers), ("/api/uploads", user.headers), ("/api/auth/login", {})):
        r = await client.post(path, data=io.BytesIO(big), headers={**headers, **JSON})
        assert (await problem(r, 413))["code"] == "PAYLOAD_TOO_LARGE", path


# authentication ---------------------------------------------------------------------------------


async def resources(client, user, conn) -> dict[str, str]:
    """One of each thing a user owns: a native upload with a chunk, a completed file, a tus upload, a draft."""
    data = b"r" * (CHUNK + 1)
    upload = await create(client, user, data)
    await put_chunks(client, user, upload, data, indexes=[0])
    file = await insert_file(conn, user.id)
    r = await client.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Length": "10"})
    tus_id = r.headers["Location"].rsplit("/", 1)[-1]
    post_id = await insert_post(conn, user.id, "draft", published=False)
    return {"upload": upload["id"], "file": file["id"], "tus": tus_id, "post": post_id}


def resource_requests(ids: dict[str, str]) -> list[tuple[str, str, dict, bytes | None]]:
    u, f, t, p = ids["upload"], ids["file"], ids["tus"], ids["post"]
    return [
        ("GET", f"/api/uploads/{u}", {}, None),
        ("PUT", f"/api/uploads/{u}/chunks/1", {}, b"r"),
        ("POST", f"/api/uploads/{u}/complete", {}, None),
        ("DELETE", f"/api/uploads/{u}", {}, None),
        ("GET", f"/api/files/{f}", {}, None),
        ("GET", f"/api/files/{f}/events", {}, None),
        ("GET", f"/api/files/{f}/content", {}, None),
        ("GET", f"/api/files/{f}/thumbnail", {}, None),
        ("DELETE", f"/api/files/{f}", {}, None),
        ("HEAD", f"/api/tus/{t}", TUS, None),
        ("PATCH", f"/api/tus/{t}", {**TUS, **STREAM, "Upload-Offset": "0"}, b"x"),
        ("DELETE", f"/api/tus/{t}", TUS, None),
        ("GET", f"/api/posts/{p}", {}, None),
        ("PATCH", f"/api/posts/{p}", JSON, b'{"title": "mine"}'),
        ("DELETE", f"/api/posts/{p}", {}, None),
    ]


async def everything(conn: asyncpg.Connection, ids: dict[str, str]) -> tuple:
    posts = await conn.fetch("SELECT id, title FROM posts ORDER BY id")
    return (*[await upload_state(conn, ids[k]) for k in ("upload", "file", "tus")], [tuple(p.values()) for p in posts])


async def test_bad_tokens_and_other_users_touch_nothing(client, user, make_user, conn, settings) -> None:
    ids = await resources(client, user, conn)
    before = await everything(conn, ids)
    now = int(time.time())
    expired = jwt.encode(
        {"sub": user.id, "role": "USER", "iat": now - 100, "exp": now - 10, "typ": "access"},
        JWT_SECRET,
        algorithm="HS256",
    )
    forged = jwt.encode(
        {"sub": user.id, "role": "ADMIN", "iat": now, "exp": now + 60, "typ": "access"},
        "another secret" * 3,
        algorithm="HS256",
    )
    bad_auth = [
        None,
        "Bearer",
        "Bearer ",
        "Basic x",
        "Bearer a.b.c",
        f"Bearer {expired}",
        f"Bearer {forged}",
        f"Token {user.token}",
        "Bearer " + "a" * 4000,
        f"Bearer {user.token}x",
    ]
    other = await make_user()
    for method, path, headers, body in resource_requests(ids):
        for auth in bad_auth:
            sent = {**headers, **({"Authorization": auth} if auth is not None else {})}
            r = await client.request(method, path, headers=sent, data=body)
            if method == "HEAD":
                assert r.status == 401, (path, auth)
            else:
                assert (await problem(r, 401))["code"] == "UNAUTHORIZED", (method, path, auth)
        r = await client.request(method, path, headers={**headers, **other.headers}, data=body)
        if method == "HEAD":
            assert r.status == 404, path
        else:
            await problem(r, 404)
    assert await everything(conn, ids) == before


# ids in paths -----------------------------------------------------------------------------------

BAD_IDS = [
    "nope",
    "' OR 1=1 --",
    "1; DROP TABLE files",
    "x" * 5000,
    "日本語",
    "%F0%9F%A6%84",
    "%00",
    "a%00b",
    "%ff%fe",
    "..%2F..%2Fetc",
    "%E2%80%AE",
    "-1",
    "00000000-0000-0000-0000-000000000000",
]


async def test_every_id_route_refuses_bad_ids(client, user, admin, conn) -> None:
    ids = await resources(client, user, conn)
    before = await everything(conn, ids)
    routes = [
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None and "{" in r.resource.canonical
    ]
    assert len(routes) >= 15
    for method, pattern in routes:
        methods = ("HEAD", "PATCH", "DELETE") if method == "*" else (method,)
        for m in methods:
            for bad in BAD_IDS:
                path = pattern.replace("{index}", "0").replace("{id}", bad).replace("{upload_id}", bad)
                for who in (user, admin):
                    headers = {**who.headers, **TUS, **(STREAM if m == "PATCH" else {}), "Upload-Offset": "0"}
                    body = b"{}" if m == "PATCH" and "tus" not in pattern else (b"x" if m in ("PUT", "PATCH") else None)
                    if m == "PATCH" and "tus" not in pattern:
                        headers["Content-Type"] = "application/json"
                    r = await client.request(m, path, headers=headers, data=body)
                    if m == "HEAD":
                        assert r.status in (403, 404, 422), (m, path, r.status)
                        continue
                    await problem(r, 403, 404, 422)
    assert await everything(conn, ids) == before


# JSON bodies ------------------------------------------------------------------------------------

BAD_BODIES = [
    (b"[]", JSON, 400),
    (b"[1, 2]", JSON, 400),
    (b"null", JSON, 400),
    (b'"x"', JSON, 400),
    (b"1", JSON, 400),
    (b"[" * 10_000 + b"]" * 10_000, JSON, 400),
    (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, JSON, 400),
    (b'{"title": "a", "title": "b"}', JSON, 400),
    (b'{"filename": "a", "size": 1, "size": 2}', JSON, 400),
    (b'{"title": "\xff\xfe"}', JSON, 400),
    (b"", JSON, 400),
    (b'{"title": "a"}', {"Content-Type": "text/plain"}, 415),
    (b'{"title": "a"}', {}, 415),
    (b'{"title": "a"}', {"Content-Type": "application/x-www-form-urlencoded"}, 415),
]


async def test_malformed_json_bodies_on_every_json_endpoint(client, user, admin, conn) -> None:
    ids = await resources(client, user, conn)
    before = await everything(conn, ids), await conn.fetchval("SELECT count(*) FROM users")
    endpoints = [
        ("POST", "/api/uploads", user),
        ("POST", "/api/posts", user),
        ("PATCH", f"/api/posts/{ids['post']}", user),
        ("PATCH", f"/api/users/{user.id}", admin),
        ("POST", "/api/auth/register", None),
        ("POST", "/api/auth/login", None),
        ("POST", "/api/auth/refresh", None),
    ]
    for method, path, who in endpoints:
        for raw, headers, status in BAD_BODIES:
            r = await client.request(method, path, data=raw, headers={**(who.headers if who else {}), **headers})
            await problem(r, status)
    assert (await everything(conn, ids), await conn.fetchval("SELECT count(*) FROM users")) == before


async def test_tus_numbers_in_headers_change_nothing(client, user, conn) -> None:
    r = await client.post("/api/tus/", headers={**user.headers, **TUS, **STREAM, "Upload-Length": "10"}, data=b"abcd")
    upload_id = r.headers["Location"].rsplit("/", 1)[-1]
    before = await upload_state(conn, upload_id)
    path = f"/api/tus/{upload_id}"
    for offset in ("-1", "1e3", "０", "4.0", "0x4", "", "9" * 19, "9" * 40, str(2**63), "four"):
        r = await client.patch(path, data=b"ef", headers={**user.headers, **TUS, **STREAM, "Upload-Offset": offset})
        await problem(r, 400, 409)
    for length in ("-1", "1e3", "０", "9" * 40, "ten"):
        r = await client.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Length": length})
        assert (await problem(r, 400))["code"] == "TUS_INVALID_LENGTH", length
    r = await client.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Length": str(2**63)})
    assert (await problem(r, 413))["code"] == "UPLOAD_TOO_LARGE"
    r = await client.patch(path, data=b"efghijklmnop", headers={**user.headers, **TUS, **STREAM, "Upload-Offset": "4"})
    assert (await problem(r, 413))["code"] == "TUS_LENGTH_EXCEEDED"
    assert await upload_state(conn, upload_id) == before
    assert await conn.fetchval("SELECT count(*) FROM files") == 1


async def test_query_values_on_files(client, user, conn) -> None:
    file = await insert_file(conn, user.id, status="PROCESSING")
    for query, field in (
        ("wait=nan", "wait"),
        ("wait=inf", "wait"),
        ("wait=-1", "wait"),
        ("wait=61", "wait"),
        ("wait=1e1", "wait"),
        ("wait=%EF%BC%95", "wait"),
        ("wait=%00", "wait"),
    ):
        r = await client.get(f"/api/files/{file['id']}?{query}", headers=user.headers)
        assert (await problem(r, 422))["field"] == field, query
    for query, field in (
        ("status=DONE", "status"),
        ("type=%00", "type"),
        ("page=%EF%BC%91", "page"),
        ("page=99999999999999999999", "page"),
        ("limit=-5", "limit"),
        ("limit=1.5", "limit"),
    ):
        r = await client.get(f"/api/files?{query}", headers=user.headers)
        assert (await problem(r, 422))["field"] == field, query
    r = await client.get("/api/files?status=processing&type=Image", headers=user.headers)  # case does not matter
    assert r.status == 200 and [f["id"] for f in (await r.json())["files"]] == [file["id"]]


async def test_ranges_and_missing_blobs_are_problems(client, user, conn, storage_dir) -> None:
    """aiohttp's FileResponse would answer these with a bare body in the file's own Content-Type."""
    file = await insert_file(conn, user.id, size=100)
    blob = storage_dir / file["path"]
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(bytes(range(100)))
    url = f"/api/files/{file['id']}/content"
    for rng in (
        "bytes=100-",
        "bytes=99999999999999999999-",
        "bytes=5-1",
        "bytes=x",
        "bytes=0-1,5-6",
        "items=0-1",
        "bytes=1-2-3",
        "bytes=0-\u0663",
        "bytes=-",
    ):
        r = await client.get(url, headers={**user.headers, "Range": rng})
        assert (await problem(r, 416))["code"] == "RANGE_NOT_SATISFIABLE", rng
        assert r.headers["Content-Range"] == "bytes */100"
    for rng, expected in (
        ("bytes=98-", bytes([98, 99])),
        ("bytes=-2", bytes([98, 99])),
        ("bytes=-500", bytes(range(100))),
        ("bytes=0-0", b"\x00"),
        ("bytes=90-1000", bytes(range(90, 100))),
    ):
        r = await client.get(url, headers={**user.headers, "Range": rng})
        assert r.status == 206 and await r.read() == expected, rng
    blob.unlink()
    assert (await problem(await client.get(url, headers=user.headers), 404))["code"] == "FILE_NOT_FOUND"


async def test_concatenation_names_only_real_ids(client, user, conn) -> None:
    for ids in (
        "/api/tus/%00",
        "/api/tus/a%00b /api/tus/c",
        "/api/tus/" + "a" * 300,
        "/api/tus/%ff%fe",
        "/api/tus/%ED%A0%80",
        "/api/tus/' OR 1=1 --",
    ):
        r = await client.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Concat": f"final;{ids}"})
        assert (await problem(r, 400))["code"] == "TUS_INVALID_CONCAT", ids
    assert await conn.fetchval("SELECT count(*) FROM files") == 0


async def test_undecodable_content_encoding_is_a_problem(client, user, conn) -> None:
    """aiohttp decodes gzip/deflate bodies as they are read; a broken stream was an unhandled 500."""
    data = b"e" * (CHUNK + 1)
    upload = await create(client, user, data)
    before = await upload_state(conn, upload["id"])

    async def streamed(body: bytes):  # no Content-Length: the chunk is read (and decoded) until it fails
        yield body

    for encoding in ("gzip", "deflate"):
        r = await client.post(
            "/api/posts", data=b"not compressed", headers={**user.headers, **JSON, "Content-Encoding": encoding}
        )
        assert (await problem(r, 400))["code"] == "BAD_REQUEST" and r.headers["Connection"] == "close"
        r = await client.put(
            f"/api/uploads/{upload['id']}/chunks/0",
            data=streamed(b"x" * 1000),
            headers={**user.headers, "Content-Encoding": encoding},
        )
        assert (await problem(r, 400))["code"] == "BAD_REQUEST"
    bomb = gzip.compress(json.dumps({"title": "x" * (50 * 1024 * 1024)}).encode())  # 50 KiB that inflate to 50 MiB
    r = await client.post("/api/posts", data=bomb, headers={**user.headers, **JSON, "Content-Encoding": "gzip"})
    assert (await problem(r, 413))["code"] == "PAYLOAD_TOO_LARGE"
    assert await upload_state(conn, upload["id"]) == before and await conn.fetchval("SELECT count(*) FROM posts") == 0
    r = await client.post(
        "/api/posts",
        data=gzip.compress(b'{"title": "zipped"}'),
        headers={**user.headers, **JSON, "Content-Encoding": "gzip"},
    )
    assert r.status == 201 and (await r.json())["title"] == "zipped"
