"""The blob store interface, held to one contract by both backends: the local directory and S3 (Ceph RGW)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from service import storage
from service.config import MiB
from service.storage import BlobNotFound, BlobStore, LocalStore, StorageConfigError, StorageUnavailable
from service.storage.s3 import PART_SIZE, S3Store
from tests import ceph
from tests.support import free_port


@pytest.fixture(params=["local", "s3"])
async def blobs(request: pytest.FixtureRequest, storage_dir: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        store: BlobStore = LocalStore(storage_dir)
    else:
        env = request.getfixturevalue("make_bucket")()
        rgw = request.getfixturevalue("ceph_rgw")
        store = S3Store(
            env["STORAGE_URL"][5:].partition("/")[0],
            "some/prefix",
            region="us-east-1",
            endpoint=rgw.endpoint,
            access_key=rgw.access_key,
            secret_key=rgw.secret_key,
        )
    yield store
    await store.close()


async def read(store: BlobStore, key: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([piece async for piece in await store.get(key, offset, length)])


async def keys(store: BlobStore, prefix: str) -> set[str]:
    return {info.key async for info in store.objects(prefix)}


async def test_a_streamed_put_is_visible_only_once_committed(blobs: BlobStore) -> None:
    data = os.urandom(5 * PART_SIZE + 12345)  # parts of a multipart upload, several in flight, a short last one
    key = storage.blob_key(storage.new_blob_name())
    writer = await blobs.writer(key, len(data))
    for start in range(0, len(data), MiB):
        await writer.write(data[start : start + MiB])
    assert await blobs.head(key) is None and await keys(blobs, "files/") == set()
    with pytest.raises(BlobNotFound):
        await blobs.get(key)
    await writer.commit()

    info = await blobs.head(key)
    assert info is not None and info.key == key and info.size == len(data)
    assert hashlib.sha256(await read(blobs, key)).hexdigest() == hashlib.sha256(data).hexdigest()
    assert await keys(blobs, "files/") == {key} and await blobs.unfinished("files/") == []


async def test_small_and_empty_objects(blobs: BlobStore) -> None:
    for data in (b"", b"x", os.urandom(1000)):
        key = storage.blob_key(storage.new_blob_name())
        writer = await blobs.writer(key)
        await writer.write(data)
        await writer.commit()
        assert await read(blobs, key) == data and (await blobs.head(key)).size == len(data)  # type: ignore[union-attr]


async def test_ranged_gets(blobs: BlobStore) -> None:
    data = os.urandom(3 * MiB + 7)
    key = storage.blob_key(storage.new_blob_name())
    writer = await blobs.writer(key)
    await writer.write(data)
    await writer.commit()
    assert await read(blobs, key, 1000, 2000) == data[1000:3000]
    assert await read(blobs, key, len(data) - 10) == data[-10:]
    assert await read(blobs, key, 5, 0) == b""
    assert await read(blobs, key, MiB, 2 * MiB + 7) == data[MiB:]


async def test_missing_keys(blobs: BlobStore) -> None:
    key = storage.blob_key(storage.new_blob_name())
    assert await blobs.head(key) is None
    with pytest.raises(BlobNotFound):
        await blobs.get(key)
    await blobs.delete(key)  # harmless


async def test_list_by_prefix_and_delete(blobs: BlobStore) -> None:
    names = [storage.new_blob_name() for _ in range(3)]
    made = {storage.blob_key(n) for n in names} | {storage.thumbnail_key(names[0], "image/webp")}
    for key in made:
        writer = await blobs.writer(key)
        await writer.write(key.encode())
        await writer.commit()
    assert await keys(blobs, "files/") == {storage.blob_key(n) for n in names}
    assert await keys(blobs, "thumbs/") == {storage.thumbnail_key(names[0], "image/webp")}
    assert await keys(blobs, storage.blob_key(names[1])) == {storage.blob_key(names[1])}
    await storage.delete_file_blobs(blobs, [names[0]])
    assert await keys(blobs, "") == {storage.blob_key(n) for n in names[1:]}


async def test_an_abandoned_write_is_found_and_aborted(blobs: BlobStore) -> None:
    """A killed writer never commits nor aborts: unfinished() finds what it left, abort() ends it."""
    key = storage.blob_key(storage.new_blob_name())
    abandoned = await blobs.writer(key)
    await abandoned.write(os.urandom(PART_SIZE + 1))  # S3: a multipart upload with one part sent
    (found,) = await blobs.unfinished("files/")
    assert found.key == key and await blobs.unfinished(key) == [found]
    await blobs.abort(found)
    assert await blobs.unfinished("files/") == [] and await blobs.head(key) is None
    await abandoned.abort()  # harmless now; frees what this process still holds (a dead one holds nothing)

    aborted = await blobs.writer(key)
    await aborted.write(b"gone")
    await aborted.abort()
    assert await blobs.unfinished("files/") == [] and await blobs.head(key) is None


async def test_presigned_get_carries_the_response_headers(blobs: BlobStore) -> None:
    key = storage.blob_key(storage.new_blob_name())
    writer = await blobs.writer(key)
    await writer.write(b"%PDF-1.4 hello")
    await writer.commit()
    disposition = 'attachment; filename="a b.pdf"'
    url = await blobs.presign_get(key, 60, "application/pdf", disposition)
    if isinstance(blobs, LocalStore):
        assert url is None and blobs.local_path(key) == blobs.path(key)  # served with sendfile instead
        return
    assert url is not None
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200 and await r.read() == b"%PDF-1.4 hello"
        assert r.headers["Content-Disposition"] == disposition and r.headers["Content-Type"] == "application/pdf"


async def test_check_puts_gets_and_deletes(blobs: BlobStore) -> None:
    assert blobs.description in await blobs.check()
    assert await keys(blobs, "") == set() and await blobs.unfinished("") == []


def test_keys_never_leave_their_area(storage_dir: Path) -> None:
    for bad in ("../etc/passwd", "a/b", "", "x.webp", "..", "a b"):
        with pytest.raises(ValueError):
            storage.blob_key(bad)
    with pytest.raises(ValueError):
        LocalStore(storage_dir).path("files/../../outside")
    assert storage.owner_of("files/ab/abcdef") == "abcdef" and storage.owner_of("thumbs/ab/abc.webp") == "abc"
    assert storage.owner_of("elsewhere/x") is None


async def test_s3_faults_are_told_apart(ceph_rgw: ceph.CephRGW, make_bucket) -> None:
    """A missing bucket or refused credentials cannot work as configured; an unreachable server is a fault
    that passes (StorageUnavailable, retried)."""
    bucket = make_bucket()["STORAGE_URL"][5:].partition("/")[0]
    cases = [
        (
            S3Store(
                "no-such-bucket-here",
                "",
                region="us-east-1",
                endpoint=ceph_rgw.endpoint,
                access_key=ceph_rgw.access_key,
                secret_key=ceph_rgw.secret_key,
            ),
            StorageConfigError,
            "does not exist",
        ),
        (
            S3Store(
                bucket,
                "",
                region="us-east-1",
                endpoint=ceph_rgw.endpoint,
                access_key=ceph_rgw.access_key,
                secret_key="wrong",
            ),
            StorageConfigError,
            "refused",
        ),
        (
            S3Store(
                bucket,
                "",
                region="us-east-1",
                endpoint=f"http://127.0.0.1:{free_port()}",
                access_key=ceph_rgw.access_key,
                secret_key=ceph_rgw.secret_key,
            ),
            StorageUnavailable,
            "127.0.0.1",
        ),
    ]
    for store, error, words in cases:
        try:
            with pytest.raises(error, match=words):
                await store.check()
            with pytest.raises(StorageUnavailable):
                writer = await store.writer("files/ab/abc")
                await writer.write(b"x")
                await writer.commit()
        finally:
            await store.close()
