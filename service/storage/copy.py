"""`chunkd storage copy SRC DST`: every blob of one store into another (a directory into a bucket, say), so a
deployment can move. Each object is hashed on the way and read back from the target to check its SHA-256;
objects already there with the same bytes are skipped, so an interrupted copy is simply run again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from service.progress import Progress
from service.storage.base import BlobInfo, BlobStore, StorageError
from service.storage.layout import AREAS


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the target, same SHA-256
    bytes: int = 0


async def copy_all(source: BlobStore, target: BlobStore) -> CopyReport:
    objects = [info for area in AREAS async for info in source.objects(area + "/")]
    progress = Progress(f"copying {len(objects)} blobs", sum(o.size for o in objects))
    report = CopyReport()
    for info in sorted(objects, key=lambda o: o.key):
        existing = await target.head(info.key)
        if (
            existing is not None
            and existing.size == info.size
            and await sha256_of(target, info.key) == await sha256_of(source, info.key)
        ):
            report.skipped.append(info.key)
        else:
            await copy_one(source, target, info, progress)
            report.copied.append(info.key)
            report.bytes += info.size
            continue
        progress.advance(info.size)
    progress.finish()
    return report


async def copy_one(source: BlobStore, target: BlobStore, info: BlobInfo, progress: Progress) -> None:
    digest = hashlib.sha256()
    writer = await target.writer(info.key, info.size)
    try:
        async for piece in await source.get(info.key):
            digest.update(piece)
            await writer.write(piece)
            progress.advance(len(piece))
        await writer.commit()
    except BaseException:
        await writer.abort()
        raise
    copied = await sha256_of(target, info.key)
    if copied != digest.hexdigest():
        raise StorageError(
            f"{info.key}: the copy reads back with SHA-256 {copied}, the source has {digest.hexdigest()}"
        )


async def sha256_of(store: BlobStore, key: str) -> str:
    digest = hashlib.sha256()
    async for piece in await store.get(key):
        digest.update(piece)
    return digest.hexdigest()
