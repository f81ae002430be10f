"""chunkd on S3 (a bucket of the suite's Ceph RGW): what only a bucket shows. Crash leftovers, an unreachable
store, presigned redirects, cleanup by listing, start-up and doctor lines, copying a deployment's blobs, and
two servers and a worker that share nothing but PostgreSQL and the bucket."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from PIL import Image

from service import cleanup, storage
from service.app import create_app
from service.config import Settings
from service.keys import pool_key
from service.storage.s3 import PART_SIZE, S3Store
from service.worker import Worker
from tests.support import JWT_SECRET, ROOT, free_port, make_settings, scratch_dir, stored_keys
from tests.tus_support import STREAM, TUS, b64
from tests.uploading import UPLOAD_ENV, jpeg, noise_png, sha256, upload, wait_for_status

SETTINGS_ENV = UPLOAD_ENV
pytestmark = pytest.mark.parametrize("storage_env", ["s3"], indirect=True)


async def ready_file(client, user, conn: asyncpg.Connection, data: bytes, name: str = "f.bin") -> asyncpg.Record:
    """An upload completed through the API of an app without a worker: PROCESSING, waiting for one."""
    file_id = await upload(client, user, data, name)
    return await conn.fetchrow("SELECT id, filename FROM files WHERE id = $1", file_id)


async def killed_workers_upload(store: S3Store, key: str) -> None:
    """What a worker killed mid-assembly leaves: a multipart upload with a part and no completion."""
    client = await store.client()
    created = await client.create_multipart_upload(Bucket=store.bucket, Key=store.full(key))
    await client.upload_part(
        Bucket=store.bucket, Key=store.full(key), UploadId=created["UploadId"], PartNumber=1, Body=os.urandom(PART_SIZE)
    )


async def test_a_killed_workers_multipart_upload_is_aborted_when_the_file_is_taken_again(
    client, user, conn, settings: Settings
) -> None:
    data = os.urandom(PART_SIZE + 5000)
    row = await ready_file(client, user, conn, data)
    store = S3Store.from_settings(settings)
    try:
        await killed_workers_upload(store, storage.blob_key(row["filename"]))
        assert len(await store.unfinished("files/")) == 1

        worker = Worker(settings, client.server.app[pool_key], store)
        assert await worker.run_once() == 1
        await worker.close()
        assert await store.unfinished("files/") == []  # aborted, not left to linger
        assert (await conn.fetchval("SELECT status FROM files WHERE id = $1", row["id"])) == "COMPLETED"
        assert sha256(b"".join([p async for p in await store.get(storage.blob_key(row["filename"]))])) == sha256(data)
    finally:
        await store.close()


async def test_an_unreachable_store_never_fails_a_file(client, user, conn, settings: Settings) -> None:
    data = jpeg(200, 100)
    row = await ready_file(client, user, conn, data, "p.jpg")
    pool = client.server.app[pool_key]
    nowhere = settings.replace(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    worker = Worker(nowhere, pool)
    for _ in range(7):  # more claims than MAX_ATTEMPTS: none of them counts
        await conn.execute("UPDATE files SET run_after = now() WHERE id = $1", row["id"])
        assert await worker.run_once() == 1
        file = await conn.fetchrow(
            "SELECT status, attempts, worker_id, blocked_reason, "
            "(SELECT count(*) FROM file_chunks WHERE file_id = $1) AS chunks "
            "FROM files WHERE id = $1",
            row["id"],
        )
        assert (file["status"], file["attempts"], file["worker_id"]) == ("PROCESSING", 0, None)
        assert file["blocked_reason"] == "storage_unavailable"  # the environment's fault, with its backoff
        assert file["chunks"] > 0  # every byte kept
    assert await conn.fetchval("SELECT blocked_retries FROM files WHERE id = $1", row["id"]) == 7
    await worker.close()
    assert not [p for p in nowhere.work_path.rglob("*") if p.is_file()]  # no working copy left behind

    await conn.execute("UPDATE files SET run_after = now() WHERE id = $1", row["id"])
    worker = Worker(settings, pool)
    assert await worker.run_once() == 1
    await worker.close()
    body = await wait_for_status(client, user, row["id"])
    assert body["status"] == "COMPLETED" and body["metadata"]["width"] == 200


async def test_downloads_answer_with_the_store_unreachable_as_503(
    aiohttp_client,
    user,
    conn,
    settings: Settings,
) -> None:
    served = await aiohttp_client(create_app(settings, with_worker=True))
    body = await wait_for_status(served, user, await upload(served, user, b"some words\n" * 100, "a.txt"))
    down = await aiohttp_client(create_app(settings.replace(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")))
    r = await down.get(body["url"], headers=user.headers)
    problem = await r.json()
    assert r.status == 503 and problem["code"] == "STORAGE_UNAVAILABLE" and r.headers["Retry-After"]
    assert "127.0.0.1" not in problem["detail"]  # where the store lives is not the client's business


async def test_download_redirect_is_a_presigned_url_with_the_same_disposition(
    aiohttp_client,
    user,
    settings: Settings,
) -> None:
    served = await aiohttp_client(create_app(settings.replace(download_redirect=True), with_worker=True))
    data = jpeg(400, 300)
    body = await wait_for_status(served, user, await upload(served, user, data, "été photo.jpg"))
    direct = await aiohttp_client(create_app(settings))  # the same file, streamed through chunkd
    through = await direct.get(body["url"], headers=user.headers)
    assert through.status == 200 and await through.read() == data

    r = await served.get(body["url"], headers=user.headers, allow_redirects=False)
    assert r.status == 302 and r.headers["Cache-Control"] == "no-store"
    location = r.headers["Location"]
    assert location.startswith(settings.s3_endpoint_url) and "X-Amz-Expires=300" in location
    async with aiohttp.ClientSession() as http:
        async with http.get(location) as presigned:
            assert presigned.status == 200 and sha256(await presigned.read()) == sha256(data)
            assert presigned.headers["Content-Disposition"] == through.headers["Content-Disposition"]
            assert presigned.headers["Content-Type"] == "image/jpeg"
        r = await served.get(body["thumbnail"], headers=user.headers, allow_redirects=False)
        assert r.status == 302
        async with http.get(r.headers["Location"]) as thumb:
            assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/webp"
        # A presigned URL is no way around the owner check
        stranger = await (
            await served.post("/api/auth/register", json={"email": "s@example.com", "password": "password123"})
        ).json()
        r = await served.get(
            body["url"], headers={"Authorization": f"Bearer {stranger['access_token']}"}, allow_redirects=False
        )
        assert r.status == 404


async def test_streamed_ranges_match_the_local_rules(aiohttp_client, user, settings: Settings) -> None:
    served = await aiohttp_client(create_app(settings, with_worker=True))
    data = os.urandom(700_000)
    body = await wait_for_status(served, user, await upload(served, user, data, "x.bin"))
    url = body["url"]
    r = await served.get(url, headers=user.headers)
    assert r.status == 200 and r.headers["Accept-Ranges"] == "bytes" and await r.read() == data
    last_modified = r.headers["Last-Modified"]
    cases = {"bytes=0-0": data[:1], "bytes=699990-": data[-10:], "bytes=-5": data[-5:], "bytes=100-9999999": data[100:]}
    for asked, expected in cases.items():
        r = await served.get(url, headers={**user.headers, "Range": asked})
        assert r.status == 206 and await r.read() == expected, asked
        start = len(data) - len(expected) if asked.startswith("bytes=-") else int(asked[6:].split("-")[0])
        assert r.headers["Content-Range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
    for bad in ("bytes=700000-", "bytes=5-2", "pages=1-2"):
        r = await served.get(url, headers={**user.headers, "Range": bad})
        assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}", bad
        assert (await r.json())["code"] == "RANGE_NOT_SATISFIABLE"
    r = await served.get(url, headers={**user.headers, "Range": "bytes=0-9", "If-Range": last_modified})
    assert r.status == 206 and await r.read() == data[:10]
    r = await served.get(
        url, headers={**user.headers, "Range": "bytes=0-9", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert r.status == 200 and await r.read() == data  # changed since: the whole object
    r = await served.head(url, headers=user.headers)
    assert r.status == 200 and int(r.headers["Content-Length"]) == len(data)


async def test_cleanup_lists_the_bucket(aiohttp_client, user, conn, settings: Settings) -> None:
    served = await aiohttp_client(create_app(settings, with_worker=True))
    body = await wait_for_status(served, user, await upload(served, user, jpeg(64, 64), "kept.jpg"))
    kept = await stored_keys(settings)
    store = S3Store.from_settings(settings)
    try:
        orphan = storage.new_blob_name()
        for key in (storage.blob_key(orphan), storage.thumbnail_key(orphan, "image/webp")):
            await storage.put_file(store, key, Path(__file__))
        await killed_workers_upload(store, storage.blob_key(storage.new_blob_name()))
        pool = served.server.app[pool_key]

        young = await cleanup.run_cleanup(pool, settings, store)
        assert young.blobs == [] and len(await stored_keys(settings)) == len(kept) + 3  # all too new to judge

        later = time.time() + 2 * 86400
        dry = await cleanup.run_cleanup(pool, settings, store, dry_run=True, now=later)
        assert len(dry.blobs) == 3 and len(await stored_keys(settings)) == len(kept) + 3
        report = await cleanup.run_cleanup(pool, settings, store, now=later)
        assert sorted(report.blobs) == sorted(dry.blobs)
        assert {storage.blob_key(orphan), storage.thumbnail_key(orphan, "image/webp")} <= set(report.blobs)
        assert await stored_keys(settings) == kept  # the file's blob and thumbnail stay
        r = await served.get(body["url"], headers=user.headers)
        assert r.status == 200
    finally:
        await store.close()


def run_chunkd(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_store_that_cannot_work_is_one_clear_line(
    settings: Settings,
    database_url: str,
    storage_env: dict[str, str],
    storage_dir: Path,
) -> None:
    base = {
        **storage_env,
        "DATABASE_URL": database_url,
        "STORAGE_DIR": str(storage_dir),
        "JWT_SECRET": JWT_SECRET,
        "PORT": str(free_port()),
    }
    doctor = run_chunkd("doctor", **base)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert re.search(
        r"^ok   storage: s3://\S+ at http://127\.0\.0\.1:\d+: bucket exists, put/get/delete work$", doctor.stdout, re.M
    )
    bucket = storage_env["STORAGE_URL"][5:].partition("/")[0]
    broken = {
        "STORAGE_URL=s3://Bad_Bucket": (
            {"STORAGE_URL": "s3://Bad_Bucket/x"},
            "STORAGE_URL: 'Bad_Bucket' is not a valid bucket name",
        ),
        "ftp": ({"STORAGE_URL": "ftp://host/x"}, "STORAGE_URL: expected file:///path or s3://bucket/prefix"),
        "missing bucket": ({"STORAGE_URL": "s3://no-such-bucket-12/x"}, "bucket 'no-such-bucket-12' does not exist"),
        "wrong secret": ({"AWS_SECRET_ACCESS_KEY": "wrong"}, f"access to bucket '{bucket}' refused"),
    }
    for case, (env, words) in broken.items():
        for command in ("serve", "worker"):
            result = run_chunkd(command, **{**base, **env})
            assert result.returncode == 2, (case, command, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert lines[-1].startswith("chunkd: ") and words in lines[-1], (case, command, result.stderr)
            assert "Traceback" not in result.stderr
        if case in ("missing bucket", "wrong secret"):
            doctor = run_chunkd("doctor", **{**base, **env})
            assert doctor.returncode == 1 and re.search(rf"^FAIL storage: .*{re.escape(words)}", doctor.stdout, re.M), (
                doctor.stdout
            )


async def test_storage_copy_moves_a_directory_into_a_bucket(
    aiohttp_client,
    user,
    database_url: str,
    settings: Settings,
    storage_dir: Path,
) -> None:
    """A deployment on a local directory moves to the bucket: copy, switch STORAGE_URL, same downloads."""
    local = make_settings(database_url, storage_dir, **UPLOAD_ENV)
    served = await aiohttp_client(create_app(local, with_worker=True))
    data = {"a.jpg": jpeg(300, 200), "b.bin": os.urandom(300_000)}
    bodies = {
        name: await wait_for_status(served, user, await upload(served, user, content, name))
        for name, content in data.items()
    }
    assert await stored_keys(settings) == set()
    env = {
        **os.environ,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key,
    }
    copy = subprocess.run(
        [sys.executable, "-m", "service", "storage", "copy", str(storage_dir), settings.storage_url],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert copy.returncode == 0, copy.stderr
    copied_bytes = sum((storage_dir / k).stat().st_size for k in await stored_keys(local))
    assert copy.stdout.strip() == f"copied 3 blobs ({copied_bytes} bytes), 0 already there; every SHA-256 verified"
    assert await stored_keys(settings) == await stored_keys(local)
    again = subprocess.run(copy.args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.stdout.strip() == "copied 0 blobs (0 bytes), 3 already there; every SHA-256 verified"

    on_bucket = await aiohttp_client(create_app(settings))
    for name, body in bodies.items():
        r = await on_bucket.get(body["url"], headers=user.headers)
        assert r.status == 200 and sha256(await r.read()) == sha256(data[name])
    assert (await on_bucket.get(bodies["a.jpg"]["thumbnail"], headers=user.headers)).status == 200


async def test_two_servers_and_a_worker_share_only_the_database_and_the_bucket(chunkd, user, conn) -> None:
    """Each process has its own empty local directory; the client alternates servers for every chunk and
    every tus PATCH; each file completes once and downloads from either server with the right bytes."""
    dirs = [scratch_dir("chunkd-test-node-") for _ in range(3)]
    servers = [chunkd("serve", "--no-worker", STORAGE_DIR=str(d), **UPLOAD_ENV) for d in dirs[:2]]
    worker = chunkd("worker", wait_path=None, STORAGE_DIR=str(dirs[2]), **UPLOAD_ENV)
    photo, blob = noise_png(400, 300), os.urandom(700_000)  # incompressible: many 64 KiB chunks
    sessions = [aiohttp.ClientSession(s.url) for s in servers]
    try:
        native_id = await _alternating_native_upload(sessions, user, photo, "photo.png")
        tus_id = await _alternating_tus_upload(sessions, user, blob, "blob.bin")
        for file_id, data, has_thumbnail in ((native_id, photo, True), (tus_id, blob, False)):
            body = await wait_for_status(sessions[1], user, file_id, timeout=90)
            assert body["status"] == "COMPLETED", body["error"]
            thumbnails = []
            for session in sessions:
                async with session.get(body["url"], headers=user.headers) as r:
                    assert r.status == 200 and sha256(await r.read()) == sha256(data)
                async with session.get(f"/api/files/{file_id}/thumbnail", headers=user.headers) as r:
                    assert r.status == (200 if has_thumbnail else 404)
                    thumbnails.append(await r.read())
            if has_thumbnail:
                assert sha256(thumbnails[0]) == sha256(thumbnails[1])
                with Image.open(io.BytesIO(thumbnails[0])) as image:
                    assert (image.format, image.size) == ("WEBP", (320, 240))
    finally:
        for session in sessions:
            await session.close()
    for process in servers + [worker]:
        assert process.stop() == 0
    log = worker.output()
    for file_id in (native_id, tus_id):
        assert (
            len(
                re.findall(rf"action=file_completed .*file_id={file_id}|file_id={file_id} .*action=file_completed", log)
            )
            == 1
        ), log[-3000:]
    assert await conn.fetchval("SELECT count(*) FROM files WHERE status = 'COMPLETED' AND attempts = 1") == 2
    for d in dirs:  # nothing was kept locally by anyone
        assert not [p for p in d.rglob("*") if p.is_file()], d


async def _alternating_native_upload(sessions: list[aiohttp.ClientSession], user: Any, data: bytes, name: str) -> str:
    async with sessions[0].post("/api/uploads", json={"filename": name, "size": len(data)}, headers=user.headers) as r:
        assert r.status == 201, await r.text()
        created = await r.json()
    size = created["chunk_size"]
    assert created["total_chunks"] >= 4
    for index in range(created["total_chunks"]):
        async with sessions[index % 2].put(
            f"/api/uploads/{created['id']}/chunks/{index}",
            data=data[index * size : (index + 1) * size],
            headers=user.headers,
        ) as r:
            assert r.status == 201, await r.text()
    async with sessions[1].post(f"/api/uploads/{created['id']}/complete", headers=user.headers) as r:
        assert r.status == 202, await r.text()
    return created["id"]


async def _alternating_tus_upload(sessions: list[aiohttp.ClientSession], user: Any, data: bytes, name: str) -> str:
    headers = {**user.headers, **TUS}
    async with sessions[1].post(
        "/api/tus/", headers={**headers, "Upload-Length": str(len(data)), "Upload-Metadata": f"filename {b64(name)}"}
    ) as r:
        assert r.status == 201, await r.text()
        path = "/api/tus/" + r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    piece, offset, turn = 100_000, 0, 0
    while offset < len(data):
        session = sessions[turn % 2]
        async with session.head(path, headers=headers) as r:  # where the other server left it
            assert int(r.headers["Upload-Offset"]) == offset
        async with session.patch(
            path, data=data[offset : offset + piece], headers={**headers, **STREAM, "Upload-Offset": str(offset)}
        ) as r:
            assert r.status == 204, await r.text()
            offset = int(r.headers["Upload-Offset"])
        turn += 1
    assert turn >= 4
    return path.rsplit("/", 1)[-1]


async def test_an_upload_streams_into_a_multipart_upload_while_it_arrives(
    aiohttp_client,
    user,
    conn,
    settings: Settings,
) -> None:
    """Issue 16's streaming on a bucket: the contiguous prefix goes out as parts before the upload is
    complete; the object appears only once the file is COMPLETED."""
    served = await aiohttp_client(create_app(settings.replace(streaming_min_size=1), with_worker=True))
    data = os.urandom(2 * PART_SIZE + 300_000)
    headers = {**user.headers, **TUS}
    r = await served.post("/api/tus/", headers={**headers, "Upload-Length": str(len(data))})
    assert r.status == 201
    path = "/api/tus/" + r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    file_id = path.rsplit("/", 1)[-1]
    offset, piece = 0, 1024 * 1024
    while offset < PART_SIZE + piece:  # more than a part's worth, not all of it
        r = await served.patch(
            path, data=data[offset : offset + piece], headers={**headers, **STREAM, "Upload-Offset": str(offset)}
        )
        assert r.status == 204, await r.text()
        offset += piece
    deadline = time.monotonic() + 30
    while not any("unfinished upload" in k for k in await stored_keys(settings)):
        assert time.monotonic() < deadline, "no part went out while the upload was arriving"
        await asyncio.sleep(0.2)
    assert await conn.fetchval("SELECT status FROM files WHERE id = $1", file_id) == "UPLOADING"
    assert not [k for k in await stored_keys(settings) if k.startswith("files/") and "unfinished" not in k]

    while offset < len(data):
        r = await served.patch(
            path, data=data[offset : offset + piece], headers={**headers, **STREAM, "Upload-Offset": str(offset)}
        )
        assert r.status == 204, await r.text()
        offset += piece
    body = await wait_for_status(served, user, file_id, timeout=60)
    assert body["status"] == "COMPLETED", body["error"]
    r = await served.get(body["url"], headers=user.headers)
    assert sha256(await r.read()) == sha256(data)
    keys = await stored_keys(settings)
    assert len(keys) == 1 and not any("unfinished" in k for k in keys)  # the blob, no upload left open
