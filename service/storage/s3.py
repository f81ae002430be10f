"""The S3 store (AWS S3, Ceph RGW, MinIO, ...), on aiobotocore: `pip install chunkd[s3]`.

Keys live under the URL's prefix in the bucket. A write is a multipart upload, parts sent while the next
fills (memory: PARTS_IN_FLIGHT + 1 parts), completed on commit, so the object appears under its key only
whole; a small object is one PUT on commit. A writer that dies leaves its multipart upload open:
`unfinished()` lists those, `abort()` ends them. Every failure but a missing object is StorageUnavailable
(unreachable, 5xx, throttled, refused): nothing about the bytes can make S3 fail."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from service.config import MiB, Settings
from service.storage.base import BlobInfo, BlobNotFound, StorageConfigError, StorageUnavailable, Unfinished

log = logging.getLogger(__name__)

PART_SIZE = 8 * MiB  # S3 wants >= 5 MiB for every part but the last
MAX_PARTS = 10_000  # S3's limit: bigger objects get bigger parts
PARTS_IN_FLIGHT = 2  # parts uploading while the next one fills
READ_SIZE = 1 * MiB  # piece size of a streamed GET
NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden"}


class S3Store:
    def __init__(
        self, bucket: str, prefix: str, *, region: str, endpoint: str = "", access_key: str = "", secret_key: str = ""
    ) -> None:
        self.bucket, self.prefix, self.region, self.endpoint = bucket, prefix.strip("/"), region, endpoint
        self._credentials = (access_key or None, secret_key or None)  # None: the AWS default chain
        self.description = f"s3://{bucket}/{self.prefix}" + (f" at {endpoint}" if endpoint else "")
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        parts = urlsplit(settings.storage_url)
        return cls(
            parts.netloc,
            unquote(parts.path),
            region=settings.aws_region,
            endpoint=settings.s3_endpoint_url,
            access_key=settings.aws_access_key_id,
            secret_key=settings.aws_secret_access_key,
        )

    async def client(self) -> Any:
        """The client, made on first use (in the event loop that will use it)."""
        async with self._opening:
            if self._client is None:
                config = AioConfig(
                    s3={"addressing_style": "path"} if self.endpoint else {},  # no bucket DNS names off AWS
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                    max_pool_connections=64,
                    signature_version="s3v4",
                    # The newer default checksum trailers are not understood by every S3 server.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                self._client = await self._stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        region_name=self.region,
                        endpoint_url=self.endpoint or None,
                        aws_access_key_id=self._credentials[0],
                        aws_secret_access_key=self._credentials[1],
                        config=config,
                    )
                )
            return self._client

    def full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def short(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in NOT_FOUND:
                raise BlobNotFound(what) from None
            raise StorageUnavailable(f"{what}: {self.explain(e)}") from e
        except NoCredentialsError:
            raise StorageUnavailable(
                f"{what}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from None
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as e:
            raise StorageUnavailable(f"{what}: {e}") from e

    def explain(self, e: ClientError) -> str:
        error, meta = e.response.get("Error", {}), e.response.get("ResponseMetadata", {})
        code = str(error.get("Code", ""))
        if code == "NoSuchBucket" or (code == "404" and "Key" not in error):
            return f"bucket {self.bucket!r} does not exist" + (f" at {self.endpoint}" if self.endpoint else "")
        if code in REFUSED:
            return (
                f"access to bucket {self.bucket!r} refused ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        return f"{code or meta.get('HTTPStatusCode')} {error.get('Message', '')}".strip()

    # the interface ----------------------------------------------------------------------------------
    async def writer(self, key: str, size_hint: int | None = None) -> S3Writer:
        part = max(PART_SIZE, -(-(size_hint or 0) // (MAX_PARTS - 1)))
        return S3Writer(self, key, part)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        client = await self.client()
        if length == 0:
            return _nothing()
        extra = {}
        if offset or length is not None:
            extra["Range"] = f"bytes={offset}-" + ("" if length is None else str(offset + length - 1))
        with self.errors(f"reading {key}"):
            response = await client.get_object(Bucket=self.bucket, Key=self.full(key), **extra)
        return self._read(key, response["Body"])

    async def _read(self, key: str, body: Any) -> AsyncIterator[bytes]:
        try:
            while True:
                with self.errors(f"reading {key}"):
                    piece = await body.read(READ_SIZE)
                if not piece:
                    return
                yield piece
        finally:
            body.close()

    async def head(self, key: str) -> BlobInfo | None:
        client = await self.client()
        try:
            with self.errors(f"reading {key}"):
                response = await client.head_object(Bucket=self.bucket, Key=self.full(key))
        except BlobNotFound:
            return None
        return BlobInfo(key, response["ContentLength"], response["LastModified"].timestamp())

    async def delete(self, key: str) -> None:
        client = await self.client()
        with self.errors(f"deleting {key}"):
            await client.delete_object(Bucket=self.bucket, Key=self.full(key))

    async def objects(self, prefix: str) -> AsyncIterator[BlobInfo]:
        client = await self.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.full(prefix))
        with self.errors(f"listing {prefix}"):
            async for page in pages:
                for item in page.get("Contents", []):
                    yield BlobInfo(self.short(item["Key"]), item["Size"], item["LastModified"].timestamp())

    async def unfinished(self, prefix: str) -> list[Unfinished]:
        client = await self.client()
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.full(prefix))
        found = []
        with self.errors(f"listing unfinished uploads under {prefix}"):
            async for page in pages:
                for upload in page.get("Uploads", []):
                    key = self.short(upload["Key"])
                    found.append(
                        Unfinished(
                            key,
                            upload["Initiated"].timestamp(),
                            upload["UploadId"],
                            f"{key} (unfinished upload {upload['UploadId'][:16]})",
                        )
                    )
        return found

    async def abort(self, write: Unfinished) -> None:
        client = await self.client()
        try:
            with self.errors(f"aborting the upload of {write.key}"):
                await client.abort_multipart_upload(Bucket=self.bucket, Key=self.full(write.key), UploadId=write.token)
        except BlobNotFound:  # NoSuchUpload is not in NOT_FOUND; a 404 here means already gone
            pass

    async def presign_get(self, key: str, expires: int, content_type: str, disposition: str | None) -> str | None:
        client = await self.client()
        params = {"Bucket": self.bucket, "Key": self.full(key), "ResponseContentType": content_type}
        if disposition:
            params["ResponseContentDisposition"] = disposition
        with self.errors(f"presigning {key}"):
            return await client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)

    def local_path(self, key: str) -> Path | None:
        return None

    async def check(self) -> str:
        """The bucket exists and takes a put, a get and a delete. StorageConfigError if it cannot work as
        configured (no such bucket, credentials refused), StorageUnavailable if it cannot be reached."""
        client = await self.client()
        try:
            with self.errors(self.description):
                await client.head_bucket(Bucket=self.bucket)
        except StorageUnavailable as e:
            cause = e.__cause__
            if isinstance(cause, ClientError) and cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (
                301,
                400,
                403,
                404,
            ):
                raise StorageConfigError(f"{self.description}: {self.explain(cause)}") from None
            raise
        except BlobNotFound:
            raise StorageConfigError(f"{self.description}: bucket {self.bucket!r} does not exist") from None
        probe, body = self.full(f".chunkd-check/{uuid.uuid4().hex}"), uuid.uuid4().bytes
        with self.errors(f"{self.description}: putting a probe object"):
            await client.put_object(Bucket=self.bucket, Key=probe, Body=body)
        try:
            with self.errors(f"{self.description}: reading the probe object back"):
                response = await client.get_object(Bucket=self.bucket, Key=probe)
                async with response["Body"] as stream:
                    if await stream.read() != body:
                        raise StorageUnavailable(f"{self.description}: the probe object read back wrong")
        finally:
            with self.errors(f"{self.description}: deleting the probe object"):
                await client.delete_object(Bucket=self.bucket, Key=probe)
        return f"{self.description}: bucket exists, put/get/delete work"

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # an async generator with no items


class S3Writer:
    local_path: Path | None = None  # no local file: the worker keeps its own working copy

    def __init__(self, store: S3Store, key: str, part_size: int) -> None:
        self.store, self.key, self.part_size = store, key, part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: dict[int, str] = {}  # part number -> ETag, once uploaded
        self._numbered = 0  # parts handed out
        self._sending: set[asyncio.Task[None]] = set()

    async def write(self, data: bytes | bytearray) -> None:
        self._buffer += data
        while len(self._buffer) >= self.part_size:
            part = bytes(self._buffer[: self.part_size])
            del self._buffer[: self.part_size]
            await self._send(part)

    async def _send(self, part: bytes) -> None:
        client = await self.store.client()
        if self._upload_id is None:
            with self.store.errors(f"starting the upload of {self.key}"):
                created = await client.create_multipart_upload(Bucket=self.store.bucket, Key=self.store.full(self.key))
            self._upload_id = created["UploadId"]
        while len(self._sending) >= PARTS_IN_FLIGHT:
            done, _ = await asyncio.wait(self._sending, return_when=asyncio.FIRST_COMPLETED)
            self._sending -= done
            for task in done:
                task.result()  # a failed part fails the write
        self._numbered += 1
        self._sending.add(asyncio.create_task(self._upload_part(client, self._numbered, part)))

    async def _upload_part(self, client: Any, number: int, part: bytes) -> None:
        with self.store.errors(f"uploading part {number} of {self.key}"):
            response = await client.upload_part(
                Bucket=self.store.bucket,
                Key=self.store.full(self.key),
                UploadId=self._upload_id,
                PartNumber=number,
                Body=part,
            )
        self._parts[number] = response["ETag"]

    async def commit(self) -> None:
        client = await self.store.client()
        if self._upload_id is None:  # small enough for one PUT
            with self.store.errors(f"storing {self.key}"):
                await client.put_object(
                    Bucket=self.store.bucket, Key=self.store.full(self.key), Body=bytes(self._buffer)
                )
            self._buffer.clear()
            return
        if self._buffer:
            await self._send(bytes(self._buffer))
            self._buffer.clear()
        sending, self._sending = self._sending, set()
        for task in sending:
            await task
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in sorted(self._parts.items())]
        with self.store.errors(f"completing the upload of {self.key}"):
            await client.complete_multipart_upload(
                Bucket=self.store.bucket,
                Key=self.store.full(self.key),
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
        self._upload_id = None

    async def abort(self) -> None:
        for task in self._sending:
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        self._sending.clear()
        self._buffer.clear()
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        try:
            await self.store.abort(Unfinished(self.key, 0, upload_id, self.key))
        except StorageUnavailable as e:  # cleanup and the next attempt abort it later
            log.warning("could not abort the upload of %s: %s", self.key, e, extra={"action": "upload_abort_failed"})
