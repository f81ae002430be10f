"""Blob storage: one small interface (base.BlobStore), a local-directory backend (the default) and an S3 one,
and every key in one place (layout). Open a store with from_settings(); in the app, storage_ctx keeps one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from service.config import Settings, parse_storage_url
from service.keys import settings_key, storage_key
from service.storage.base import (
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobWriter,
    StorageConfigError,
    StorageError,
    StorageMissing,
    StorageUnavailable,
    Unfinished,
)
from service.storage.layout import AREAS, blob_key, keys_of, new_blob_name, owner_of, thumbnail_key
from service.storage.local import LocalStore

__all__ = [
    "AREAS",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobWriter",
    "LocalStore",
    "StorageConfigError",
    "StorageError",
    "StorageMissing",
    "StorageUnavailable",
    "Unfinished",
    "blob_key",
    "check",
    "delete_file_blobs",
    "from_settings",
    "from_url",
    "keys_of",
    "new_blob_name",
    "owner_of",
    "put_bytes",
    "put_file",
    "storage_ctx",
    "thumbnail_key",
]

PUT_FILE_READ = 1024 * 1024


def from_settings(settings: Settings) -> BlobStore:
    """The configured store; nothing is contacted yet (check() does that). Raises StorageConfigError."""
    parts = urlsplit(settings.storage_url)
    if parts.scheme == "s3":
        try:
            from service.storage import s3  # the s3 extra: imported only when a bucket is configured
        except ImportError as e:
            raise StorageConfigError(
                f"STORAGE_URL={settings.storage_url} needs the S3 client ({e.name} is "
                "missing): pip install 'chunkd[s3]'"
            ) from None
        return s3.S3Store.from_settings(settings)
    return LocalStore(settings.storage_path)


async def check(settings: Settings) -> str:
    """Opens the configured store, puts, gets and deletes a probe, closes it: what doctor and start-up say."""
    store = from_settings(settings)
    try:
        return await store.check()
    finally:
        await store.close()


def from_url(url: str, settings: Settings) -> BlobStore:
    """A store named on the command line: file:///path, a plain path, or s3://bucket/prefix (with the
    configured credentials and endpoint)."""
    if "://" not in url:
        url = Path(url).resolve().as_uri()
    try:
        return from_settings(settings.replace(storage_url=parse_storage_url(url)))
    except ValueError as e:
        raise StorageConfigError(f"{url}: {e}") from None


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[storage_key] = from_settings(app[settings_key])
    yield
    await store.close()


async def put_file(store: BlobStore, key: str, path: Path) -> None:
    """A local file (a thumbnail) into the store under key."""
    writer = await store.writer(key, (await asyncio.to_thread(path.stat)).st_size)
    try:
        with await asyncio.to_thread(open, path, "rb") as f:
            while data := await asyncio.to_thread(f.read, PUT_FILE_READ):
                await writer.write(data)
        await writer.commit()
    except BaseException:
        await writer.abort()
        raise


async def put_bytes(store: BlobStore, key: str, data: bytes) -> None:
    """Bytes in memory (a thumbnail) into the store under key."""
    writer = await store.writer(key, len(data))
    try:
        await writer.write(data)
        await writer.commit()
    except BaseException:
        await asyncio.shield(writer.abort())
        raise


async def delete_file_blobs(store: BlobStore, names: list[str]) -> None:
    """Every object of these files (blob and thumbnails); missing ones are fine. A row whose name is not
    one of ours (never made by chunkd) has no objects of ours to delete."""
    for name in names:
        try:
            keys = keys_of(name)
        except ValueError:
            continue
        for key in keys:
            await store.delete(key)
