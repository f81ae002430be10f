"""The IETF Resumable Uploads draft over raw sockets, following its own examples: creation with the
104 and Upload-Complete, offset retrieval, append, cancellation, the problem types, limits, digests."""

from __future__ import annotations

import base64
import hashlib
import os

from tests.rufh_support import (
    DRAFT,
    PARTIAL,
    PROBLEMS,
    append,
    create,
    exchange,
    head,
    id_of,
    path_of,
    wait_processed,
)
from tests.tus_support import CHUNK, MAX_SIZE, file_row, stored_bytes


def digest(algorithm: str, data: bytes) -> str:
    name = algorithm.replace("-", "")
    return f"{algorithm}=:{base64.b64encode(hashlib.new(name, data).digest()).decode()}:"


# Upload creation (the draft's examples A and B)


async def test_a_whole_upload_in_one_request_gets_a_104_then_the_file(rufh, user, conn) -> None:
    data = os.urandom(3 * CHUNK + 17)
    r = await create(
        rufh,
        user,
        data,
        complete=True,
        headers={
            "Upload-Length": str(len(data)),
            "Content-Disposition": "inline; filename=\"file name.jpg\"; filename*=UTF-8''f%C3%AEle%20name.bin",
        },
    )
    assert [i.status for i in r.interim] == [104]
    interim = r.interim[0]
    assert interim.reason == "Upload Resumption Supported"
    assert interim.headers["upload-draft-interop-version"] == "8"
    assert interim.sf("Upload-Limit", "dictionary")["max-size"] == (MAX_SIZE, {})
    location = interim.headers["location"]
    assert location == f"http://{rufh.server.host}:{rufh.server.port}/api/tus/{id_of(location)}"

    assert r.status == 201 and r.sf("Upload-Complete") == (True, {})
    view = r.json()
    assert view["id"] == id_of(location) and view["status"] == "PROCESSING" and view["size"] == len(data)
    assert view["original_name"] == "fîle name.bin"  # filename* wins over filename (RFC 6266)
    assert r.headers["content-location"] == f"/api/files/{view['id']}"
    row = await file_row(conn, view["id"])
    assert (row["protocol"], row["bytes_received"], row["size_deferred"]) == ("rufh", len(data), False)
    done = await wait_processed(rufh, user, view["id"])  # the worker drops the chunks once it is done
    assert done["status"] == "COMPLETED" and done["metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    r = await rufh.get(f"/api/files/{view['id']}/content", headers=user.headers)
    assert await r.read() == data


async def test_a_partial_creation_then_appends_then_completion(rufh, user, conn) -> None:
    data = os.urandom(2 * CHUNK + 999)
    first, second = CHUNK + 5, 2 * CHUNK
    r = await create(rufh, user, data[:first], headers={"Upload-Length": str(len(data))})
    assert r.status == 201 and r.sf("Upload-Complete") == (False, {})
    location = r.headers["location"]
    assert [i.headers["location"] for i in r.interim] == [location]  # identical in 104 and 201
    limits = r.sf("Upload-Limit", "dictionary")
    assert limits["max-size"] == (MAX_SIZE, {}) and 0 < limits["max-age"][0] <= 24 * 3600
    assert r.headers["upload-offset"] == str(first)

    r = await head(rufh, user, path_of(location))
    assert r.status == 204
    assert r.sf("Upload-Offset") == (first, {}) and r.sf("Upload-Complete") == (False, {})
    assert r.sf("Upload-Length") == (len(data), {}) and r.headers["cache-control"] == "no-store"
    assert "max-age" in r.sf("Upload-Limit", "dictionary")

    r = await append(rufh, user, path_of(location), first, data[first:second])
    assert r.status == 204 and r.sf("Upload-Complete") == (False, {}) and r.headers["upload-offset"] == str(second)
    assert not r.interim  # an append never carries the Location again
    r = await append(rufh, user, path_of(location), second, data[second:], complete=True)
    assert r.status == 200 and r.sf("Upload-Complete") == (True, {})
    assert r.json()["status"] == "PROCESSING"

    r = await head(rufh, user, path_of(location))
    assert r.sf("Upload-Complete") == (True, {}) and r.sf("Upload-Offset") == (len(data), {})
    done = await wait_processed(rufh, user, id_of(location))
    assert done["metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    r = await head(rufh, user, path_of(location))
    assert r.sf("Repr-Digest", "dictionary")["sha-256"][0] == hashlib.sha256(data).digest()


async def test_an_empty_creation_without_length_completes_when_the_client_says(rufh, user, conn) -> None:
    """The careful strategy: create first, learn the URL, send later; the length is whatever arrived."""
    r = await create(rufh, user)
    assert r.status == 201 and r.headers["upload-offset"] == "0"
    path = path_of(r.headers["location"])
    assert "upload-length" not in (await head(rufh, user, path)).headers
    r = await append(rufh, user, path, 0, b"streamed ")
    r = await append(rufh, user, path, 9, b"bytes", complete=True)
    assert r.status == 200 and r.json()["size"] == 14
    row = await file_row(conn, id_of(path))
    assert (row["size"], row["size_deferred"], row["status"]) == (14, False, "PROCESSING")


async def test_an_empty_complete_upload_is_a_file_of_no_bytes(rufh, user) -> None:
    r = await create(rufh, user, complete=True)
    assert r.status == 201 and r.sf("Upload-Complete") == (True, {}) and r.json()["size"] == 0


# the interop version and the 104


async def test_no_104_without_an_interop_version_nor_to_http_1_0(rufh, user) -> None:
    r = await exchange(rufh, "POST", "/api/tus/", {**user.headers, "Upload-Complete": "?0"})
    assert r.status == 201 and not r.interim and r.headers["location"]
    r = await exchange(
        rufh, "POST", "/api/tus/", {**user.headers, **DRAFT, "Upload-Complete": "?0"}, version="HTTP/1.0"
    )
    assert r.status == 201 and not r.interim


async def test_the_previous_interop_version_is_spoken_and_others_refused(rufh, user, conn) -> None:
    r = await exchange(
        rufh, "POST", "/api/tus/", {**user.headers, "Upload-Draft-Interop-Version": "7", "Upload-Complete": "?0"}
    )
    assert r.status == 201 and r.interim[0].headers["upload-draft-interop-version"] == "7"
    for version in ("6", "9", "?1", "8.0", "eight"):
        r = await exchange(
            rufh,
            "POST",
            "/api/tus/",
            {**user.headers, "Upload-Draft-Interop-Version": version, "Upload-Complete": "?0"},
        )
        assert r.status == 400 and r.json()["code"] == "RUFH_INTEROP_VERSION_UNSUPPORTED", version
        assert not r.interim
    assert await conn.fetchval("SELECT count(*) FROM files") == 1


async def test_a_104_follows_100_continue(rufh, user) -> None:
    """The draft: a 104 never stands in for the 100 (Continue) that was asked for."""
    r = await exchange(
        rufh,
        "POST",
        "/api/tus/",
        {**user.headers, **DRAFT, "Upload-Complete": "?1", "Expect": "100-continue"},
        b"hello",
    )
    assert [i.status for i in r.interim] == [100, 104] and r.status == 201


# structured fields: other values are ignored, as the draft says


async def test_malformed_upload_complete_counts_as_missing(rufh, user, conn) -> None:
    for value in ("true", "1", "?2", "?1, ?0", '"?1"'):
        r = await exchange(rufh, "POST", "/api/tus/", {**user.headers, **DRAFT, "Upload-Complete": value}, b"x")
        assert r.status == 400 and r.json()["code"] == "RUFH_INVALID_FIELD", value
    assert await conn.fetchval("SELECT count(*) FROM files") == 0
    r = await exchange(rufh, "POST", "/api/tus/", {**user.headers, **DRAFT, "Upload-Complete": "?1;note=1"}, b"x")
    assert r.status == 201  # parameters of an item are allowed, and ignored


async def test_malformed_length_is_ignored_and_malformed_offset_refused(rufh, user) -> None:
    r = await create(rufh, user, headers={"Upload-Length": "ten"})
    assert r.status == 201
    path = path_of(r.headers["location"])
    assert "upload-length" not in (await head(rufh, user, path)).headers
    for offset in ("-1", "0.0", "?0", "", "1 2"):
        r = await append(rufh, user, path, 0, b"abc", headers={"Upload-Offset": offset})
        assert r.status == 400 and r.json()["code"] == "RUFH_INVALID_FIELD", offset


# Upload append: its problem types


async def test_offset_mismatch_is_409_with_the_expected_offset(rufh, user, conn) -> None:
    r = await create(rufh, user, b"0123456789")
    path = path_of(r.headers["location"])
    r = await append(rufh, user, path, 25, b"abc")
    assert r.status == 409 and r.headers["content-type"].startswith("application/problem+json")
    assert r.sf("Upload-Offset") == (10, {})
    problem = r.json()
    assert problem["type"] == PROBLEMS + "mismatching-upload-offset" and problem["title"]
    assert (problem["expected-offset"], problem["provided-offset"]) == (10, 25)
    assert await stored_bytes(conn, id_of(path)) == b"0123456789"


async def test_a_completed_upload_takes_nothing_more(rufh, user, conn) -> None:
    r = await create(rufh, user, b"done", complete=True)
    path = path_of(r.headers["location"])
    r = await append(rufh, user, path, 4, b"")
    assert r.status == 400 and r.json()["type"] == PROBLEMS + "completed-upload"
    r = await append(rufh, user, path, 4, b"more", complete=True)
    assert r.status == 400 and r.json()["type"] == PROBLEMS + "inconsistent-upload-length"
    row = await file_row(conn, id_of(path))  # the worker may have taken the chunks already: not the row
    assert (row["size"], row["bytes_received"]) == (4, 4) and row["status"] != "UPLOADING"


async def test_inconsistent_lengths_are_refused(rufh, user, conn) -> None:
    r = await create(rufh, user, b"12345", complete=True, headers={"Upload-Length": "10"})
    assert r.status == 400 and r.json()["type"] == PROBLEMS + "inconsistent-upload-length"
    assert await conn.fetchval("SELECT count(*) FROM files") == 0  # refused before any row

    r = await create(rufh, user, b"12345", headers={"Upload-Length": "8"})
    path = path_of(r.headers["location"])
    for body, complete in ((b"6789", False), (b"67", True)):  # past the length; completing short of it
        r = await append(rufh, user, path, 5, body, complete=complete)
        assert r.status == 400 and r.json()["type"] == PROBLEMS + "inconsistent-upload-length", body
    r = await append(rufh, user, path, 5, b"678", headers={"Upload-Length": "9"})
    assert r.status == 400 and r.json()["type"] == PROBLEMS + "inconsistent-upload-length"
    assert await stored_bytes(conn, id_of(path)) == b"12345"
    r = await append(rufh, user, path, 5, b"678", complete=True)
    assert r.status == 200


async def test_an_append_needs_partial_upload_and_upload_complete(rufh, user) -> None:
    r = await create(rufh, user)
    path = path_of(r.headers["location"])
    r = await append(rufh, user, path, 0, b"abc", headers={"Content-Type": "application/offset+octet-stream"})
    assert r.status == 415 and "application/partial-upload" in r.headers["accept-patch"]
    r = await exchange(rufh, "PATCH", path, {**user.headers, **DRAFT, **PARTIAL, "Upload-Offset": "0"}, b"abc")
    assert r.status == 400 and r.json()["code"] == "RUFH_INVALID_FIELD"


# cancellation, OPTIONS, access


async def test_cancellation_removes_the_upload(rufh, user, conn) -> None:
    r = await create(rufh, user, b"some bytes")
    path = path_of(r.headers["location"])
    r = await exchange(rufh, "DELETE", path, {**user.headers, **DRAFT})
    assert r.status == 204
    assert await file_row(conn, id_of(path)) is None and await stored_bytes(conn, id_of(path)) == b""
    assert (await head(rufh, user, path)).status == 404


async def test_options_announces_partial_upload_and_the_limits(rufh) -> None:
    for path in ("/api/tus/", "/api/tus/any-upload"):
        r = await exchange(rufh, "OPTIONS", path, {**DRAFT})
        assert r.status == 204
        assert "application/partial-upload" in [t.strip() for t in r.headers["accept-patch"].split(",")]
        limits = r.sf("Upload-Limit", "dictionary")
        assert limits["max-size"] == (MAX_SIZE, {}) and limits["max-append-size"] == (MAX_SIZE, {})
        assert limits["max-age"] == (24 * 3600, {})


async def test_uploads_are_private_and_need_a_token(rufh, user, make_user, conn) -> None:
    r = await exchange(rufh, "POST", "/api/tus/", {**DRAFT, "Upload-Complete": "?0"})
    assert r.status == 401 and not r.interim
    r = await create(rufh, user, b"mine")
    path = path_of(r.headers["location"])
    stranger = await make_user()
    assert (await head(rufh, stranger, path)).status == 404
    assert (await append(rufh, stranger, path, 4, b"theirs")).status == 404
    assert (await exchange(rufh, "DELETE", path, {**stranger.headers, **DRAFT})).status == 404
    assert await stored_bytes(conn, id_of(path)) == b"mine"


async def test_the_protocols_keep_to_their_own_uploads(rufh, user) -> None:
    r = await create(rufh, user, b"draft")
    draft = path_of(r.headers["location"])
    tus = await rufh.post("/api/tus/", headers={**user.headers, "Tus-Resumable": "1.0.0", "Upload-Length": "3"})
    assert (await rufh.head(draft, headers={**user.headers, "Tus-Resumable": "1.0.0"})).status == 404
    assert (await head(rufh, user, path_of(tus.headers["Location"]))).status == 404
    r = await rufh.get(f"/api/files/{id_of(draft)}", headers=user.headers)
    assert r.status == 200 and (await r.json())["status"] == "UPLOADING"


async def test_method_override_is_honoured_on_post_only(rufh, user, conn) -> None:
    r = await create(rufh, user, b"keep me")
    path = path_of(r.headers["location"])
    r = await exchange(rufh, "GET", path, {**user.headers, **DRAFT, "X-HTTP-Method-Override": "DELETE"})
    assert r.status == 405 and await file_row(conn, id_of(path)) is not None
    r = await exchange(rufh, "POST", path, {**user.headers, **DRAFT, "X-HTTP-Method-Override": "DELETE"})
    assert r.status == 204 and await file_row(conn, id_of(path)) is None


async def test_cors_exposes_the_drafts_fields(rufh, user) -> None:
    r = await exchange(
        rufh,
        "OPTIONS",
        "/api/tus/",
        {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "upload-complete, upload-draft-interop-version",
        },
    )
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {
        "upload-complete",
        "upload-draft-interop-version",
        "upload-offset",
        "upload-length",
        "content-digest",
        "repr-digest",
        "content-disposition",
    } <= allowed
    r = await create(rufh, user, b"x", headers={"Origin": "https://app.example"})
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {
        "location",
        "upload-complete",
        "upload-offset",
        "upload-length",
        "upload-limit",
        "repr-digest",
        "accept-patch",
        "content-location",
    } <= exposed
