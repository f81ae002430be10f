"""The one interface every blob store offers, and the errors it raises.

A store holds immutable objects under keys (service.storage.layout makes every key). Writing is streamed and
becomes visible under the key only when committed; a writer that never commits (a killed process) leaves an
`Unfinished` write that `unfinished()` finds and `abort()` removes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class StorageError(Exception):
    """The store refused or failed an operation; the message is one line saying why."""


class StorageUnavailable(StorageError):
    """The store cannot be used now (unreachable, 5xx, throttling, credentials refused, disk full or failing):
    the environment's fault, never the bytes'. Whoever meets it retries later; a file is never FAILED for it."""


class StorageMissing(StorageUnavailable):
    """The local store's root directory itself is gone (an unmounted disk, say): nothing is created in its
    place, whoever meets it waits for it to come back."""


class StorageConfigError(StorageError):
    """The store as configured cannot work (bad STORAGE_URL, missing bucket, refused credentials, missing extra)."""


class BlobNotFound(StorageError):
    """No object under that key."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: float  # unix time the object was written


@dataclass(frozen=True)
class Unfinished:
    """A write that was started and never committed nor aborted."""

    key: str
    started: float  # unix time
    token: str  # what the store needs to abort it (a temporary file, a multipart upload id)
    label: str  # how reports name it


class BlobWriter(Protocol):
    key: str
    # A local file holding the bytes written so far, if the store keeps one (the local directory: its
    # temporary file). Complete once write() has been called for every byte.
    local_path: Path | None

    async def write(self, data: bytes | bytearray) -> None: ...
    async def commit(self) -> None:
        """Durable and visible under the key; the writer is done."""

    async def abort(self) -> None:
        """Nothing of it remains; harmless after commit or a failed write."""


class BlobStore(Protocol):
    description: str  # for logs and doctor: a path, or s3://bucket/prefix at an endpoint

    async def writer(self, key: str, size_hint: int | None = None) -> BlobWriter: ...
    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The bytes [offset, offset+length) as an iterator; BlobNotFound before the first byte if missing."""

    async def head(self, key: str) -> BlobInfo | None: ...
    async def delete(self, key: str) -> None:
        """Removes the object; a missing one is fine."""

    def objects(self, prefix: str) -> AsyncIterator[BlobInfo]:
        """Committed objects whose key starts with prefix, in no promised order."""

    async def unfinished(self, prefix: str) -> list[Unfinished]: ...
    async def abort(self, write: Unfinished) -> None: ...
    async def presign_get(self, key: str, expires: int, content_type: str, disposition: str | None) -> str | None:
        """A URL that GETs the object for `expires` seconds with these response headers; None if the store
        cannot make one (the local directory)."""

    def local_path(self, key: str) -> Path | None:
        """The object as a local file if the store is a directory (served with sendfile), else None."""

    async def check(self) -> str:
        """Put, get and delete a probe object; returns what was checked, raises StorageError saying why not."""

    async def close(self) -> None: ...
