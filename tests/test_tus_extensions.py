"""tus extensions: creation, creation-with-upload, creation-defer-length, expiration, checksum,
termination and concatenation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from tests.tus_support import (
    CHUNK,
    MAX_SIZE,
    STREAM,
    TUS,
    b64,
    create,
    file_row,
    metadata,
    patch,
    raw_patch,
    stored_bytes,
    unlocked,
    until,
    upload_id,
    upload_path,
)


def checksum(algorithm: str, data: bytes) -> dict[str, str]:
    return {"Upload-Checksum": f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"}


# creation


async def test_creation_answers_201_with_an_absolute_location(tus, user, conn) -> None:
    r = await tus.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Length": "100"})
    assert r.status == 201 and r.headers["Tus-Resumable"] == "1.0.0"
    location = r.headers["Location"]
    assert location == f"http://{tus.server.host}:{tus.server.port}/api/tus/{upload_id(location)}"
    row = await file_row(conn, upload_id(location))
    assert (row["protocol"], row["status"], row["size"], row["size_deferred"], row["bytes_received"]) == (
        "tus",
        "UPLOADING",
        100,
        False,
        0,
    )
    assert (row["original_name"], row["mimetype"], row["type"]) == ("upload", "application/octet-stream", "OTHER")
    assert row["chunk_size"] == CHUNK and row["path"].endswith(row["filename"])


async def test_creation_needs_exactly_one_of_length_and_defer(tus, user, conn) -> None:
    for sizing in (
        {},
        {"Upload-Length": "10", "Upload-Defer-Length": "1"},
        {"Upload-Defer-Length": "2"},
        {"Upload-Length": "ten"},
        {"Upload-Length": "-1"},
    ):
        r = await tus.post("/api/tus/", headers={**user.headers, **TUS, **sizing})
        assert r.status == 400, sizing
        assert (await r.json())["code"] == "TUS_INVALID_LENGTH"
    r = await tus.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Length": str(MAX_SIZE + 1)})
    assert r.status == 413 and (await r.json())["code"] == "UPLOAD_TOO_LARGE"
    assert await conn.fetchval("SELECT count(*) FROM files") == 0


async def test_metadata_maps_filename_and_filetype(tus, user, conn) -> None:
    path = await create(
        tus,
        user,
        5,
        **{"Upload-Metadata": metadata(filename="../holiday/ストーン.jpg", filetype="image/jpeg", note="hi")},
    )
    row = await file_row(conn, upload_id(path))
    assert (row["original_name"], row["mimetype"], row["type"]) == ("ストーン.jpg", "image/jpeg", "IMAGE")


async def test_malformed_metadata_is_400(tus, user, conn) -> None:
    bad = [
        f"filename {b64('a')},filename {b64('b')}",  # duplicate key
        f"file name {b64('a')}",  # a space in the key
        f"filename {b64('a')},,type {b64('b')}",  # an empty pair
        "filename not-base64!",  # bad base64
        f"clé {b64('a')}",  # non-ASCII key
        f"filename {b64('a')} extra",
    ]
    for raw in bad:
        r = await tus.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Length": "5", "Upload-Metadata": raw})
        assert r.status == 400, raw
        assert (await r.json())["code"] == "TUS_INVALID_METADATA"
    assert await conn.fetchval("SELECT count(*) FROM files") == 0


async def test_empty_upload_is_complete_at_once(tus, user, conn) -> None:
    path = await create(tus, user, 0)
    row = await file_row(conn, upload_id(path))
    assert row["status"] == "PROCESSING" and row["expires_at"] is None
    r = await tus.head(path, headers={**user.headers, **TUS})
    assert r.headers["Upload-Offset"] == "0" and r.headers["Upload-Length"] == "0"
    assert "Upload-Expires" not in r.headers


# creation-with-upload


async def test_creation_with_upload_stores_the_body(tus, user, conn) -> None:
    data = os.urandom(2 * CHUNK + 7)
    r = await tus.post(
        "/api/tus/", data=data[: CHUNK + 3], headers={**user.headers, **TUS, **STREAM, "Upload-Length": str(len(data))}
    )
    assert r.status == 201 and r.headers["Upload-Offset"] == str(CHUNK + 3)
    path = upload_path(r.headers["Location"])
    assert (await patch(tus, user, path, CHUNK + 3, data[CHUNK + 3 :])).status == 204
    assert await stored_bytes(conn, upload_id(path)) == data
    assert (await file_row(conn, upload_id(path)))["status"] == "PROCESSING"


async def test_creation_with_upload_and_a_bad_checksum_keeps_the_upload_empty(tus, user, conn) -> None:
    r = await tus.post(
        "/api/tus/",
        data=b"hello",
        headers={**user.headers, **TUS, **STREAM, "Upload-Length": "10", **checksum("sha1", b"other")},
    )
    assert r.status == 460
    path = upload_path(r.headers["Location"])  # the upload exists and can be resumed from 0
    r = await tus.head(path, headers={**user.headers, **TUS})
    assert r.headers["Upload-Offset"] == "0"


# creation-defer-length


async def test_deferred_length_is_declared_once_by_a_patch(tus, user, conn) -> None:
    path = await create(tus, user, None, **{"Upload-Defer-Length": "1"})
    r = await tus.head(path, headers={**user.headers, **TUS})
    assert r.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in r.headers

    assert (await patch(tus, user, path, 0, b"abc")).status == 204
    r = await patch(tus, user, path, 3, b"def", **{"Upload-Length": "2"})  # below what was received
    assert r.status == 400 and (await r.json())["code"] == "TUS_INVALID_LENGTH"
    r = await patch(tus, user, path, 3, b"def", **{"Upload-Length": "9"})
    assert r.status == 204 and r.headers["Upload-Offset"] == "6"
    r = await tus.head(path, headers={**user.headers, **TUS})
    assert r.headers["Upload-Length"] == "9" and "Upload-Defer-Length" not in r.headers

    r = await patch(tus, user, path, 6, b"ghi", **{"Upload-Length": "10"})  # changed
    assert r.status == 400 and (await r.json())["code"] == "TUS_INVALID_LENGTH"
    r = await patch(tus, user, path, 6, b"ghi", **{"Upload-Length": "9"})  # the same again is fine
    assert r.status == 204 and r.headers["Upload-Offset"] == "9"
    row = await file_row(conn, upload_id(path))
    assert (row["size"], row["size_deferred"], row["status"]) == (9, False, "PROCESSING")
    assert await stored_bytes(conn, upload_id(path)) == b"abcdefghi"


# expiration


async def test_upload_expires_on_post_and_every_patch(tus, user, settings) -> None:
    r = await tus.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Length": "4"})
    expires = parsedate_to_datetime(r.headers["Upload-Expires"])
    assert r.headers["Upload-Expires"].endswith(" GMT")
    assert abs(expires - (datetime.now(UTC) + timedelta(seconds=settings.upload_expiry))) < timedelta(seconds=5)
    path = upload_path(r.headers["Location"])
    r = await patch(tus, user, path, 0, b"ab")
    assert parsedate_to_datetime(r.headers["Upload-Expires"]) >= expires
    r = await patch(tus, user, path, 2, b"cd")  # complete: nothing left to expire
    assert r.status == 204 and "Upload-Expires" not in r.headers


async def test_expired_upload_is_410(tus, user, conn) -> None:
    path = await create(tus, user, 4)
    await conn.execute("UPDATE files SET expires_at = now() - interval '1 second' WHERE id = $1", upload_id(path))
    r = await tus.head(path, headers={**user.headers, **TUS})
    assert r.status == 410 and "Upload-Offset" not in r.headers
    r = await patch(tus, user, path, 0, b"ab")
    assert r.status == 410 and (await r.json())["code"] == "UPLOAD_EXPIRED"
    assert await stored_bytes(conn, upload_id(path)) == b""


# checksum


async def test_checksums_of_each_algorithm_are_verified(tus, user, conn) -> None:
    data = os.urandom(3 * CHUNK + 10)
    path = await create(tus, user, len(data))
    offset = 0
    for algorithm, piece in zip(
        ("sha1", "sha256", "md5"), (data[:CHUNK], data[CHUNK : 3 * CHUNK - 1], data[3 * CHUNK - 1 :]), strict=False
    ):
        r = await patch(tus, user, path, offset, piece, **checksum(algorithm, piece))
        assert r.status == 204, algorithm
        offset += len(piece)
        assert r.headers["Upload-Offset"] == str(offset)
    assert await stored_bytes(conn, upload_id(path)) == data


async def test_checksum_mismatch_is_460_and_discards_the_whole_body(tus, user, conn) -> None:
    data = os.urandom(CHUNK * 3 + 99)  # several chunk rows are written, then rolled back
    path = await create(tus, user, len(data) + 1)
    assert (await patch(tus, user, path, 0, b"!")).status == 204
    last_byte_changed = data[:-1] + bytes([data[-1] ^ 1])  # always differs (b"\0" did not when it ended in 0)
    r = await patch(tus, user, path, 1, data, **checksum("sha256", last_byte_changed))
    assert r.status == 460 and r.reason == "Checksum Mismatch"
    assert (await r.json())["code"] == "TUS_CHECKSUM_MISMATCH"
    assert (await file_row(conn, upload_id(path)))["bytes_received"] == 1
    assert await stored_bytes(conn, upload_id(path)) == b"!"
    r = await patch(tus, user, path, 1, data, **checksum("md5", data))  # the retry goes through
    assert r.status == 204 and await stored_bytes(conn, upload_id(path)) == b"!" + data


async def test_unknown_or_malformed_checksum_is_400(tus, user, conn) -> None:
    path = await create(tus, user, 5)
    for header in ("crc32 AAAAAA==", "sha1 not*base64", f"sha1 {b64(b'short')}", "sha256"):
        r = await patch(tus, user, path, 0, b"hello", **{"Upload-Checksum": header})
        assert r.status == 400, header
        assert (await r.json())["code"] == "TUS_INVALID_CHECKSUM"
    assert (await file_row(conn, upload_id(path)))["bytes_received"] == 0


async def test_a_cut_off_body_with_a_checksum_keeps_nothing(tus, user, conn) -> None:
    data = os.urandom(3 * CHUNK)
    path = await create(tus, user, len(data))
    request = await raw_patch(tus, user, path, 0, len(data), **checksum("sha1", data))
    await request.send(data[: 2 * CHUNK + 5])
    await request.close()
    await until(lambda: unlocked(conn, upload_id(path)))
    assert (await file_row(conn, upload_id(path)))["bytes_received"] == 0
    assert await stored_bytes(conn, upload_id(path)) == b""


# termination


async def test_termination_removes_the_upload(tus, user, conn) -> None:
    path = await create(tus, user, 10)
    assert (await patch(tus, user, path, 0, b"01234")).status == 204
    r = await tus.delete(path, headers={**user.headers, **TUS})
    assert r.status == 204 and r.headers["Tus-Resumable"] == "1.0.0"
    assert (await tus.head(path, headers={**user.headers, **TUS})).status == 404
    assert (await patch(tus, user, path, 5, b"56789")).status == 404
    assert (await tus.delete(path, headers={**user.headers, **TUS})).status == 404
    assert await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", upload_id(path)) == 0


async def test_termination_of_a_finished_upload(tus, user, conn) -> None:
    path = await create(tus, user, 3)
    assert (await patch(tus, user, path, 0, b"abc")).status == 204
    assert (await tus.delete(path, headers={**user.headers, **TUS})).status == 204
    assert await file_row(conn, upload_id(path)) is None


async def test_termination_during_an_active_patch(tus, user, conn) -> None:
    """The writer is still receiving (not stalled), yet DELETE stops it at once and wins."""
    path = await create(tus, user, 60 * CHUNK)
    request = await raw_patch(tus, user, path, 0, 60 * CHUNK)
    stop = asyncio.Event()

    async def trickle() -> None:
        while not stop.is_set():
            await request.send(b"x" * 1000)
            await asyncio.sleep(0.02)

    sender = asyncio.create_task(trickle())
    try:
        await asyncio.sleep(0.3)
        started = time.monotonic()
        r = await tus.delete(path, headers={**user.headers, **TUS})
        assert r.status == 204 and time.monotonic() - started < 1.0
        status, headers = await request.response()
        assert status == 404 and headers["tus-resumable"] == "1.0.0"
    finally:
        stop.set()
        await asyncio.gather(sender, return_exceptions=True)
        await request.close()
    assert await file_row(conn, upload_id(path)) is None
    assert await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", upload_id(path)) == 0


# concatenation


async def _partial(tus, user, data: bytes) -> str:
    path = await create(tus, user, len(data), **{"Upload-Concat": "partial"})
    assert (await patch(tus, user, path, 0, data)).status == 204
    return path


async def test_concatenation_joins_partials_without_copying_bytes(tus, user, conn) -> None:
    parts = [os.urandom(n) for n in (3 * CHUNK + 1, 17, 2 * CHUNK)]
    paths = await asyncio.gather(*(_partial(tus, user, p) for p in parts))  # uploaded in parallel
    r = await tus.head(paths[0], headers={**user.headers, **TUS})
    assert r.headers["Upload-Concat"] == "partial"
    partial_rows = await conn.fetchval("SELECT count(*) FROM files WHERE tus_concat = 'partial'")
    assert partial_rows == 3
    assert await conn.fetchval("SELECT count(*) FROM files WHERE status = 'PROCESSING'") == 0  # partials wait
    toast = (  # the TOAST tables of file_chunks' slots (sql/0217)
        "SELECT sum(pg_relation_size(c.reltoastrelid)) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'file_chunks'::regclass"
    )
    toast_before = await conn.fetchval(toast)

    base = f"http://{tus.server.host}:{tus.server.port}"
    urls = [base + paths[0], paths[1], base + paths[2]]  # absolute URLs and paths alike
    r = await tus.post(
        "/api/tus/",
        headers={
            **user.headers,
            **TUS,
            "Upload-Concat": "final;" + " ".join(urls),
            "Upload-Metadata": metadata(filename="joined.bin"),
        },
    )
    assert r.status == 201
    final = upload_path(r.headers["Location"])

    joined = b"".join(parts)
    assert await stored_bytes(conn, upload_id(final)) == joined
    assert await conn.fetchval(toast) - toast_before < 64 * 1024  # the bytes were not written again
    row = await file_row(conn, upload_id(final))
    assert (row["status"], row["size"], row["bytes_received"], row["original_name"]) == (
        "PROCESSING",
        len(joined),
        len(joined),
        "joined.bin",
    )

    r = await tus.head(final, headers={**user.headers, **TUS})
    assert r.headers["Upload-Offset"] == r.headers["Upload-Length"] == str(len(joined))
    assert r.headers["Upload-Concat"] == "final;" + " ".join(base + p for p in paths)
    for path in paths:  # consumed: their bytes are the final upload's now
        assert (await tus.head(path, headers={**user.headers, **TUS})).status == 404

    r = await patch(tus, user, final, len(joined), b"more")
    assert r.status == 403 and (await r.json())["code"] == "TUS_UPLOAD_IS_FINAL"


async def test_concatenation_refuses_bad_partials(tus, user, make_user, conn) -> None:
    done = await _partial(tus, user, b"done")
    unfinished = await create(tus, user, 10, **{"Upload-Concat": "partial"})
    plain = await create(tus, user, 0)
    theirs = await _partial(tus, await make_user(), b"theirs")
    cases = {
        f"final;{done} {unfinished}": "unfinished",
        f"final;{done} {plain}": "not a partial upload",
        f"final;{done} {theirs}": "not a partial upload",
        f"final;{done} /api/tus/00000000-0000-0000-0000-000000000000": "not a partial upload",
        f"final;https://elsewhere.example{done}": "not an upload of this server",
        f"final;{done} {done}": "only once",
        f"final;{done} /api/files/x": "not a tus upload URL",
        "final;": "Upload-Concat must be",
        "sideways": "Upload-Concat must be",
    }
    for header, reason in cases.items():
        r = await tus.post("/api/tus/", headers={**user.headers, **TUS, "Upload-Concat": header})
        body = await r.json()
        assert r.status == 400 and body["code"] == "TUS_INVALID_CONCAT" and reason in body["detail"], header
    r = await tus.post(
        "/api/tus/", headers={**user.headers, **TUS, "Upload-Concat": f"final;{done}", "Upload-Length": "4"}
    )
    assert r.status == 400 and (await r.json())["code"] == "TUS_INVALID_LENGTH"
    assert await conn.fetchval("SELECT count(*) FROM files WHERE tus_concat = 'final'") == 0
    assert await stored_bytes(conn, upload_id(done)) == b"done"  # untouched


async def test_behind_a_proxy_urls_are_the_public_ones(tus, user, conn) -> None:
    """A TLS-terminating proxy forwards X-Forwarded-Proto/-Host: Location and Upload-Concat URLs use
    them, so browsers get https URLs and can name partials by the URLs they were given."""
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "files.example"}
    r = await tus.post(
        "/api/tus/", headers={**user.headers, **TUS, **proxy, "Upload-Length": "2", "Upload-Concat": "partial"}
    )
    part = r.headers["Location"]
    assert part == f"https://files.example/api/tus/{upload_id(part)}"
    assert (await patch(tus, user, upload_path(part), 0, b"hi")).status == 204
    r = await tus.post("/api/tus/", headers={**user.headers, **TUS, **proxy, "Upload-Concat": f"final;{part}"})
    assert r.status == 201 and r.headers["Location"].startswith("https://files.example/api/tus/")
    r = await tus.head(upload_path(r.headers["Location"]), headers={**user.headers, **TUS, **proxy})
    assert r.headers["Upload-Concat"] == f"final;{part}"
