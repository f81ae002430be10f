"""The routines of appended uploads (tus and the IETF draft): append, look and cancel.

The one append routine. Every request that adds bytes to one — a tus PATCH, tus
creation-with-upload, and the IETF draft's creation with content and its PATCH — goes through append(),
which reads top to bottom as tusd's PatchFile does: take the upload's writer lock, read its row once,
run every check, receive the body into chunk rows, and mark the upload ready with one guarded
UPDATE ... RETURNING. What a request answers is built from that one read and what the body changed,
never from a second read. look() is the same for HEAD: one read, under the lock when it can be had."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from service import storage
from service.auth import current_user
from service.bodies import Body, Pace
from service.config import Settings
from service.errors import (
    ApiError,
    AppendTooLarge,
    AppendTooSmall,
    RufhInconsistentLength,
    RufhOffsetMismatch,
    RufhUploadCompleted,
    TusInvalidLength,
    TusLengthExceeded,
    TusOffsetMismatch,
    TusUploadIsFinal,
    TusUploadLocked,
    UploadExpired,
    UploadNotFound,
    UploadTooLarge,
    from_database_refusal,
)
from service.keys import body_memory_key, pool_key, settings_key, slow_by_design_key, storage_key, tus_locks_key
from service.models import File
from service.rufh import Limits as UploadLimits
from service.rufh import max_age
from service.store import files, quotas
from service.store import tus as store
from service.streaming import offer_chunk
from service.tus import http_date
from service.tus_body import Progress, Verifier, receive

log = logging.getLogger("service.append")


@dataclass(frozen=True)
class AppendRequest:
    """What one request asks of an upload, read from its headers by the protocol's handler."""

    protocol: str  # "tus" or "rufh" (files.protocol)
    offset: int  # where the client says its bytes start
    length: int | None = None  # the upload's total length, when this request declares it
    completes: bool = False  # the draft's Upload-Complete: ?1 (tus completes on reaching its length)
    verifier: Verifier | None = None  # tus Upload-Checksum, the draft's Content-Digest
    progress: Progress | None = None  # told each committed offset (the draft's progress 104s)


@dataclass(frozen=True)
class Appended:
    upload: File  # the upload after this request
    file: File | None = None  # the file, when this request completed the upload


async def append(request: web.Request, upload_id: str, want: AppendRequest) -> Appended:
    """Where aiohttp cancels the handler of a client that hung up (handler_cancellation), the append
    still runs to its end in a task of its own, so the bytes that arrived are kept all the same."""
    request[slow_by_design_key] = True  # a body takes as long as the client's link needs
    task = asyncio.create_task(_append(request, upload_id, want))
    task.add_done_callback(_retrieve)
    try:
        return await asyncio.shield(task)
    except asyncpg.InsufficientResourcesError as e:
        # A full database: the pieces committed before stay (the offset says exactly which), the one that
        # failed went with its transaction. An ApiError here, so that a creation's answer carries Location.
        log.warning("database cannot write: %s", e, extra={"action": "database_full", "upload_id": upload_id})
        raise from_database_refusal(e) from e


def _retrieve(task: asyncio.Task[Appended]) -> None:
    """Nobody awaits an orphaned append's outcome: take it, so asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


async def _append(request: web.Request, upload_id: str, want: AppendRequest) -> Appended:
    """The user's memory share first (429 before anything else), then the lock; a pooled connection
    only for each short step, never while the body arrives."""
    settings = request.app[settings_key]
    pool = request.app[pool_key]
    sent = request.content_length  # None for a chunked body: then the checks below run as it arrives
    with request.app[body_memory_key].admit(current_user(request).id) as share:
        async with request.app[tus_locks_key].hold(upload_id) as writer:
            async with pool.acquire() as conn:
                upload = _owned(request, await store.get_upload(conn, upload_id, want.protocol), upload_id)
                upload, room, max_append = await _check(conn, upload, want, sent, settings)
            async with Body(
                request.content,
                share,
                Pace.from_settings(settings),
                max_bytes=min(room, max_append),
                hasher=want.verifier.new() if want.verifier else None,
                stop=writer.stop,
                on_bytes=writer.progressed,
                transport=request.transport,
            ) as body:
                received = await receive(
                    body,
                    writer,
                    pool,
                    upload,
                    settings.upload_expiry,
                    want.verifier,
                    want.progress,
                    on_committed=lambda index, data: offer_chunk(request.app, upload, index, data),
                )
            error = received.error
            if isinstance(error, TusLengthExceeded):  # a body without Content-Length that went on too long
                error = (
                    _overflow(want, upload, room, settings)
                    if room <= max_append
                    else AppendTooLarge(
                        f"the body went past MAX_APPEND_SIZE ({max_append} bytes)",
                        headers=_limit_headers(want, upload, settings),
                    )
                )
            upload = dataclasses.replace(upload, bytes_received=received.offset, expires_at=received.expires_at)
            file = None
            if _finishes(want, upload, error):
                async with pool.acquire() as conn:
                    file = await _finish(conn, upload, settings)
                if file is not None:  # None: a repeated final tus PATCH; exactly once either way
                    upload = file
            elif error is None and want.completes and upload.length_known and upload.offset < upload.size:
                error = RufhInconsistentLength(
                    f"the upload was declared {upload.size} bytes and is complete at {upload.offset}; append the rest",
                    headers=_offset_header(upload),
                )
    if error is not None:
        raise error
    return Appended(upload, file)


async def _check(
    conn: asyncpg.Connection, upload: File, want: AppendRequest, sent: int | None, settings: Settings
) -> tuple[File, int, int]:
    """Every check before the body is read: the upload (its length declared now, if so), the room it
    has left and the most one request may append."""
    upload_id = upload.id
    if upload.tus_concat == "final":
        raise TusUploadIsFinal("a final upload is made of its partial uploads and takes no bytes of its own")
    if upload.closed and want.protocol == "rufh":
        if sent == 0:
            raise RufhUploadCompleted(f"upload {upload_id} is complete: nothing can be appended")
        raise RufhInconsistentLength(
            f"upload {upload_id} is complete at {upload.offset} bytes: appending more would change its length"
        )
    if want.offset != upload.offset:
        raise _offset_mismatch(want, upload)
    if want.length is not None:
        upload = await _declare_length(conn, upload, want, settings)
    room = (upload.size if upload.length_known else settings.max_upload_size) - upload.offset
    if sent is not None and sent > room:
        raise _overflow(want, upload, room, settings)
    max_append = settings.max_append_size or settings.max_upload_size
    if sent is not None and sent > max_append:
        raise AppendTooLarge(
            f"{sent} bytes in one request; at most {max_append} (MAX_APPEND_SIZE)",
            headers=_limit_headers(want, upload, settings),
        )
    completing = want.completes or (upload.length_known and sent == room)
    if sent is not None and sent < settings.min_append_size and not completing:
        raise AppendTooSmall(
            f"{sent} bytes; an append that does not complete the upload carries at least "
            f"{settings.min_append_size} (MIN_APPEND_SIZE)"
        )
    return upload, room, max_append


def _finishes(want: AppendRequest, upload: File, error: ApiError | None) -> bool:
    """tus: the declared length is reached (even by a body cut off right there). The draft: the client
    said Upload-Complete: ?1 and the whole body arrived, at the declared length if there is one."""
    if upload.tus_concat is not None or upload.closed:
        return False
    if want.protocol == "rufh":
        return error is None and want.completes and (not upload.length_known or upload.offset == upload.size)
    return upload.complete


async def _finish(conn: asyncpg.Connection, upload: File, settings: Settings) -> File | None:
    """The upload is complete. A length known only now (the draft's Upload-Complete without one ever
    declared) counts against the quota first: the draft asks for the policy to be checked again before
    an upload is finalised; refused, it stays incomplete with its bytes, for the client to cancel."""
    if upload.length_known:
        return await files.finish_upload(conn, upload.id, upload.offset)
    async with conn.transaction():
        await quotas.check_quota(conn, upload.uploaded_by_id, upload.offset, settings.user_quota)
        return await files.finish_upload(conn, upload.id, upload.offset)


async def look(request: web.Request, upload_id: str, protocol: str) -> File:
    """An upload's state for HEAD, read once. Taking the lock makes a stalled writer save what it has
    first, so the offset is current; a writer still receiving keeps it, and its committed offset is
    the truth then."""
    try:
        async with request.app[tus_locks_key].hold(upload_id), request.app[pool_key].acquire() as conn:
            upload = await store.get_upload(conn, upload_id, protocol)
    except TusUploadLocked:
        async with request.app[pool_key].acquire() as conn:
            upload = await store.get_upload(conn, upload_id, protocol)
    return _owned(request, upload, upload_id)


def _owned(request: web.Request, upload: File | None, upload_id: str) -> File:
    """The caller's live upload; anyone else's is as absent as one that never was."""
    if upload is None or upload.uploaded_by_id != current_user(request).id:
        raise UploadNotFound(f"upload {upload_id}")
    if upload.expired:
        raise UploadExpired(f"upload {upload_id} expired at {http_date(upload.expires_at)}; start a new one")  # type: ignore[arg-type]
    return upload


async def _declare_length(conn: asyncpg.Connection, upload: File, want: AppendRequest, settings: Settings) -> File:
    """A length is set once (tus Upload-Defer-Length, the draft's creation without one), never below
    what was received; saying another one later is the client's mistake."""
    length = want.length
    assert length is not None
    mismatch = TusInvalidLength if want.protocol == "tus" else RufhInconsistentLength
    if upload.length_known:
        if length != upload.size:
            raise mismatch(f"the upload's length is {upload.size} and cannot change (this request says {length})")
        return upload
    if length > settings.max_upload_size:
        raise UploadTooLarge(
            f"a length of {length} is above the largest upload, {settings.max_upload_size}",
            headers=_limit_headers(want, upload, settings),
        )
    async with conn.transaction():  # a deferred length counts against the quota once it is known
        await quotas.check_quota(conn, upload.uploaded_by_id, length, settings.user_quota)
        declared = await store.declare_length(conn, upload.id, length)
    if declared is None:
        raise mismatch(f"a length of {length} is below the {upload.offset} bytes already received")
    return declared


def _offset_mismatch(want: AppendRequest, upload: File) -> ApiError:
    detail = f"the upload is at offset {upload.offset}; Upload-Offset says {want.offset}"
    if want.protocol == "tus":
        return TusOffsetMismatch(detail)
    return RufhOffsetMismatch(
        detail, headers=_offset_header(upload), **{"expected-offset": upload.offset, "provided-offset": want.offset}
    )


def _overflow(want: AppendRequest, upload: File, room: int, settings: Settings) -> ApiError:
    """A body longer than the upload has room for: past its declared length, or past the largest upload."""
    if want.protocol == "tus":
        return TusLengthExceeded(f"the body goes past the upload's length ({room} bytes were left)")
    if upload.length_known:
        return RufhInconsistentLength(
            f"the content goes past the upload's length of {upload.size} bytes ({room} were left)",
            headers=_offset_header(upload),
        )
    return UploadTooLarge(
        f"the upload would grow past the largest upload, {settings.max_upload_size} bytes",
        headers=_limit_headers(want, upload, settings),
    )


def _offset_header(upload: File) -> dict[str, str]:
    return {"Upload-Offset": str(upload.offset)}


def _limit_headers(want: AppendRequest, upload: File, settings: Settings) -> dict[str, str]:
    """The draft: a 413 caused by an upload limit says what the limits are."""
    if want.protocol != "rufh":
        return {}
    return {"Upload-Limit": UploadLimits.of(settings).header(max_age(upload.expires_at))}


async def cancel(request: web.Request, upload_id: str, protocol: str) -> None:
    """Removes an upload with its chunks and blobs, finished or not. Ownership is checked first: only
    then may this request stop a writer that is still receiving (which answers 404)."""
    async with request.app[pool_key].acquire() as conn:
        upload = await store.get_upload(conn, upload_id, protocol)
    if upload is None or upload.uploaded_by_id != current_user(request).id:
        raise UploadNotFound(f"upload {upload_id}")
    async with request.app[tus_locks_key].hold(upload_id, force=True), request.app[pool_key].acquire() as conn:
        deleted = await store.delete_upload(conn, upload_id, protocol)
    if deleted is None:
        raise UploadNotFound(f"upload {upload_id}")
    await storage.delete_file_blobs(request.app[storage_key], [deleted[1]])
