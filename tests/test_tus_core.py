"""tus core protocol: OPTIONS, HEAD, PATCH, Tus-Resumable and its 412, X-HTTP-Method-Override, auth."""

from __future__ import annotations

import os

from tests.tus_support import (
    CHUNK,
    MAX_SIZE,
    STREAM,
    TUS,
    create,
    file_row,
    metadata,
    patch,
    stored_bytes,
    upload_id,
)


async def test_options_advertises_the_server_without_auth_or_version(tus) -> None:
    for path in ("/api/tus/", "/api/tus", "/api/tus/some-id"):
        r = await tus.options(path, headers={"Tus-Resumable": "0.0.1"})  # ignored on OPTIONS
        assert r.status == 204
        assert r.headers["Tus-Version"] == "1.0.0"
        assert r.headers["Tus-Extension"].split(",") == [
            "creation",
            "creation-with-upload",
            "creation-defer-length",
            "expiration",
            "checksum",
            "termination",
            "concatenation",
        ]
        assert r.headers["Tus-Max-Size"] == str(MAX_SIZE)
        assert set(r.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256", "md5"}
        assert "Tus-Resumable" not in r.headers


async def test_unsupported_or_missing_version_is_412_and_nothing_happens(tus, user, conn) -> None:
    for version in ({"Tus-Resumable": "0.2.2"}, {}):
        r = await tus.post("/api/tus/", headers={**user.headers, **version, "Upload-Length": "10"})
        assert r.status == 412
        assert r.headers["Tus-Version"] == "1.0.0" and r.headers["Tus-Resumable"] == "1.0.0"
        assert (await r.json())["code"] == "TUS_VERSION_UNSUPPORTED"
    assert await conn.fetchval("SELECT count(*) FROM files") == 0

    path = await create(tus, user, 10)
    r = await tus.patch(
        path, data=b"0123456789", headers={**user.headers, **STREAM, "Upload-Offset": "0", "Tus-Resumable": "2.0.0"}
    )
    assert r.status == 412
    assert (await file_row(conn, upload_id(path)))["bytes_received"] == 0
    assert await stored_bytes(conn, upload_id(path)) == b""


async def test_head_reports_offset_length_and_metadata_exactly(tus, user) -> None:
    raw = metadata(filename="report.pdf", filetype="application/pdf") + ",is_confidential"
    path = await create(tus, user, 1000, **{"Upload-Metadata": raw})
    r = await patch(tus, user, path, 0, b"x" * 300)
    assert r.status == 204

    r = await tus.head(path, headers={**user.headers, **TUS})
    assert r.status == 200
    assert r.headers["Upload-Offset"] == "300"
    assert r.headers["Upload-Length"] == "1000"
    assert r.headers["Upload-Metadata"] == raw
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert "Upload-Defer-Length" not in r.headers


async def test_head_of_unknown_or_foreign_upload_is_404_without_offset(tus, user, make_user) -> None:
    path = await create(tus, user, 10)
    stranger = await make_user()
    for who, where in ((user, "/api/tus/00000000-0000-0000-0000-000000000000"), (stranger, path)):
        r = await tus.head(where, headers={**who.headers, **TUS})
        assert r.status == 404
        assert "Upload-Offset" not in r.headers
        assert r.headers["Tus-Resumable"] == "1.0.0"


async def test_patch_appends_and_answers_the_new_offset(tus, user, conn) -> None:
    data = os.urandom(3 * CHUNK + 1234)
    path = await create(tus, user, len(data))
    r = await patch(tus, user, path, 0, data[: CHUNK + 5])
    assert r.status == 204 and r.headers["Upload-Offset"] == str(CHUNK + 5)
    assert r.headers["Tus-Resumable"] == "1.0.0"
    r = await patch(tus, user, path, CHUNK + 5, data[CHUNK + 5 :])
    assert r.status == 204 and r.headers["Upload-Offset"] == str(len(data))

    assert await stored_bytes(conn, upload_id(path)) == data
    lengths = [
        r["n"]
        for r in await conn.fetch(
            "SELECT length(data) AS n FROM file_chunks WHERE file_id = $1 ORDER BY chunk_index", upload_id(path)
        )
    ]
    assert max(lengths) <= CHUNK and sum(lengths) == len(data)


async def test_patch_needs_offset_octet_stream(tus, user, conn) -> None:
    path = await create(tus, user, 10)
    r = await tus.patch(
        path,
        data=b"0123456789",
        headers={**user.headers, **TUS, "Upload-Offset": "0", "Content-Type": "application/octet-stream"},
    )
    assert r.status == 415 and r.headers["Tus-Resumable"] == "1.0.0"
    assert (await r.json())["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert (await file_row(conn, upload_id(path)))["bytes_received"] == 0


async def test_patch_at_the_wrong_offset_is_409_and_changes_nothing(tus, user, conn) -> None:
    path = await create(tus, user, 10)
    assert (await patch(tus, user, path, 0, b"01234")).status == 204
    for offset in (0, 3, 7):
        r = await patch(tus, user, path, offset, b"abc")
        assert r.status == 409 and (await r.json())["code"] == "TUS_OFFSET_MISMATCH"
    r = await tus.patch(path, data=b"abc", headers={**user.headers, **TUS, **STREAM})
    assert r.status == 400 and (await r.json())["code"] == "TUS_INVALID_OFFSET"
    r = await patch(tus, user, path, 5, b"abc", **{"Upload-Offset": "-5"})
    assert r.status == 400
    assert await stored_bytes(conn, upload_id(path)) == b"01234"
    assert (await file_row(conn, upload_id(path)))["bytes_received"] == 5


async def test_patch_past_the_length_is_413(tus, user, conn) -> None:
    path = await create(tus, user, 10)
    r = await patch(tus, user, path, 0, b"0123456789AB")
    assert r.status == 413 and (await r.json())["code"] == "TUS_LENGTH_EXCEEDED"
    assert (await file_row(conn, upload_id(path)))["bytes_received"] == 0


async def test_x_http_method_override(tus, user, conn) -> None:
    """Clients behind proxies that only pass GET/POST tunnel PATCH, HEAD and DELETE through POST."""
    path = await create(tus, user, 6)
    r = await tus.post(
        path,
        data=b"abcdef",
        headers={**user.headers, **TUS, **STREAM, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"},
    )
    assert r.status == 204 and r.headers["Upload-Offset"] == "6"
    assert await stored_bytes(conn, upload_id(path)) == b"abcdef"

    r = await tus.post(path, headers={**user.headers, **TUS, "X-HTTP-Method-Override": "HEAD"})
    assert r.status == 200 and r.headers["Upload-Offset"] == "6" and r.headers["Upload-Length"] == "6"

    other = await create(tus, user, 6)
    r = await tus.post(other, headers={**user.headers, **TUS, "X-HTTP-Method-Override": "DELETE"})
    assert r.status == 204
    assert await file_row(conn, upload_id(other)) is None


async def test_unsupported_method_is_405_with_allow(tus, user) -> None:
    path = await create(tus, user, 6)
    r = await tus.get(path, headers={**user.headers, **TUS})
    assert r.status == 405 and set(r.headers["Allow"].split(", ")) == {"DELETE", "HEAD", "OPTIONS", "PATCH"}
    r = await tus.put("/api/tus/", headers={**user.headers, **TUS})
    assert r.status == 405 and r.headers["Tus-Resumable"] == "1.0.0"


async def test_bearer_token_required_and_uploads_are_private(tus, user, make_user, conn) -> None:
    r = await tus.post("/api/tus/", headers={**TUS, "Upload-Length": "10"})
    assert r.status == 401 and r.headers["Tus-Resumable"] == "1.0.0"
    assert (await r.json())["code"] == "UNAUTHORIZED"

    path = await create(tus, user, 10)
    stranger = await make_user()
    assert (await patch(tus, stranger, path, 0, b"0123456789")).status == 404
    r = await tus.delete(path, headers={**stranger.headers, **TUS})
    assert r.status == 404
    row = await file_row(conn, upload_id(path))
    assert row["bytes_received"] == 0 and row["uploaded_by_id"] == user.id


async def test_a_tus_upload_is_a_file_but_not_a_native_upload(tus, user, conn) -> None:
    """Same files table, same /api/files/{id}; but each protocol's write endpoints keep to their own
    uploads (fixed-index chunk PUTs would corrupt a tus upload's appended chunks, and back)."""
    path = await create(tus, user, 10, **{"Upload-Metadata": metadata(filename="notes.txt")})
    file_id = upload_id(path)
    r = await tus.get(f"/api/files/{file_id}", headers=user.headers)
    assert r.status == 200 and (await r.json())["original_name"] == "notes.txt"
    assert (await tus.get(f"/api/uploads/{file_id}", headers=user.headers)).status == 404
    assert (await tus.put(f"/api/uploads/{file_id}/chunks/0", data=b"x" * 10, headers=user.headers)).status == 404
    assert (await tus.delete(f"/api/uploads/{file_id}", headers=user.headers)).status == 404
    assert await stored_bytes(conn, file_id) == b""

    r = await tus.post("/api/uploads", json={"filename": "a.bin", "size": 10}, headers=user.headers)
    native = (await r.json())["id"]
    assert (await tus.head(f"/api/tus/{native}", headers={**user.headers, **TUS})).status == 404
    assert (await patch(tus, user, f"/api/tus/{native}", 0, b"0123456789")).status == 404
