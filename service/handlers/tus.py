"""tus 1.0 at /api/tus/: OPTIONS, POST (creation, creation-with-upload, defer-length, concatenation),
HEAD, PATCH and DELETE, each a checklist with early returns. An upload is a `files` row: its URL
/api/tus/{id} has the id of /api/files/{id}, and once complete the worker processes it like any other."""
from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from service import storage
from service.auth import current_user
from service.errors import (
    ApiError,
    MethodNotAllowed,
    TusInvalidConcat,
    TusInvalidLength,
    TusInvalidOffset,
    TusLengthExceeded,
    TusOffsetMismatch,
    TusUploadIsFinal,
    TusUploadLocked,
    UnsupportedMediaType,
    UploadExpired,
    UploadNotFound,
    UploadTooLarge,
)
from service.keys import pool_key, settings_key, slow_by_design_key, storage_key, tus_locks_key
from service.metrics import UPLOADS_CREATED
from service.models import File, FileStatus, NewUpload
from service.store import files
from service.store import tus as store
from service.tus import (
    CHECKSUMS,
    EXTENSIONS,
    OFFSET_STREAM,
    TUS_VERSION,
    Checksum,
    Concat,
    FileHints,
    effective_method,
    file_hints,
    http_date,
    parse_checksum,
    parse_concat,
    parse_count,
    parse_metadata,
    upload_url,
)
from service.tus_body import Limits, receive
from service.validation import path_id


async def dispatch_collection(request: web.Request) -> web.StreamResponse:
    """/api/tus/: one route for every method, so X-HTTP-Method-Override can pick the handler."""
    method = effective_method(request)
    if method == "OPTIONS":
        return get_options(request)
    if method == "POST":
        return await create_upload(request)
    raise MethodNotAllowed(f"{method} is not allowed here; allowed: OPTIONS, POST", headers={"Allow": "OPTIONS, POST"})


async def dispatch_upload(request: web.Request) -> web.StreamResponse:
    method = effective_method(request)
    if method == "OPTIONS":
        return get_options(request)
    handler = {"HEAD": head_upload, "PATCH": patch_upload, "DELETE": delete_upload}.get(method)
    if handler is None:
        allowed = "DELETE, HEAD, OPTIONS, PATCH"
        raise MethodNotAllowed(f"{method} is not allowed here; allowed: {allowed}", headers={"Allow": allowed})
    return await handler(request)


def get_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(request.app[settings_key].max_upload_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
    })


async def create_upload(request: web.Request) -> web.Response:
    user = current_user(request)
    settings = request.app[settings_key]
    concat = parse_concat(request.headers["Upload-Concat"], request) if "Upload-Concat" in request.headers else None
    raw_metadata = request.headers.get("Upload-Metadata", "").strip() or None
    hints = file_hints(parse_metadata(raw_metadata) if raw_metadata else {}, "upload")
    if concat is not None and concat.kind == "final":
        return await _create_final(request, concat, raw_metadata, hints)

    length = parse_count(request.headers.get("Upload-Length"), "Upload-Length", TusInvalidLength)
    defer = request.headers.get("Upload-Defer-Length")
    if (length is None) == (defer is None):
        raise TusInvalidLength("send either Upload-Length or Upload-Defer-Length: 1")
    if defer is not None and defer.strip() != "1":
        raise TusInvalidLength("Upload-Defer-Length can only be 1")
    if length is not None and length > settings.max_upload_size:
        raise UploadTooLarge(f"Upload-Length {length} is above Tus-Max-Size {settings.max_upload_size}")
    checksum = _checksum(request)

    async with request.app[pool_key].acquire() as conn:
        upload = await files.insert_upload(conn, NewUpload(  # Upload-Length: 0 is done at once
            uploaded_by_id=user.id, original_name=hints.original_name, mimetype=hints.mimetype, type=hints.type,
            size=length or 0, chunk_size=settings.default_chunk_size, expires_in=settings.upload_expiry,
            protocol="tus", size_deferred=length is None, tus_metadata=raw_metadata,
            tus_concat=concat.kind if concat else None))
    UPLOADS_CREATED.labels("tus").inc()
    location = upload_url(request, upload.id)
    headers = {"Location": location}
    if request.content_type == OFFSET_STREAM:  # creation-with-upload
        try:
            upload = await _write(request, upload.id, 0, None, checksum)
        except ApiError as e:
            e.headers.setdefault("Location", location)  # the upload exists: the client can resume it
            raise
        headers["Upload-Offset"] = str(upload.offset)
    return web.Response(status=201, headers={**headers, **_expires(upload)})


async def _create_final(request: web.Request, concat: Concat, raw_metadata: str | None,
                        hints: FileHints) -> web.Response:
    """Concatenation: the finished partials' chunk rows are renumbered into the final upload (no byte
    is copied) and the partials, left without bytes, are removed — all in one transaction."""
    user = current_user(request)
    settings = request.app[settings_key]
    if "Upload-Length" in request.headers or "Upload-Defer-Length" in request.headers:
        raise TusInvalidLength("a final upload's length is the sum of its partial uploads: send no Upload-Length")
    part_ids = list(concat.part_ids)
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        parts = await store.lock_parts(conn, part_ids)
        for part_id in part_ids:
            part = parts.get(part_id)
            if part is None or part.uploaded_by_id != user.id or part.tus_concat != "partial":
                raise TusInvalidConcat(f"{part_id} is not a partial upload of yours")
            if part.expired:
                raise TusInvalidConcat(f"partial upload {part_id} has expired")
            if not part.complete:
                have = f"{part.offset} of {part.size}" if part.length_known else f"{part.offset} of unknown"
                raise TusInvalidConcat(f"partial upload {part_id} is unfinished ({have} bytes)")
        size = sum(parts[p].size for p in part_ids)
        if size > settings.max_upload_size:
            raise UploadTooLarge(f"the partial uploads add up to {size} bytes, above Tus-Max-Size")
        final = await files.insert_upload(conn, NewUpload(
            uploaded_by_id=user.id, original_name=hints.original_name, mimetype=hints.mimetype, type=hints.type,
            size=size, chunk_size=settings.default_chunk_size, expires_in=settings.upload_expiry, protocol="tus",
            tus_metadata=raw_metadata, tus_concat="final", tus_parts=part_ids))
        await store.move_chunks(conn, final.id, part_ids)
        await files.mark_ready(conn, final.id)
    UPLOADS_CREATED.labels("tus").inc()
    return web.Response(status=201, headers={"Location": upload_url(request, final.id)})


async def head_upload(request: web.Request) -> web.Response:
    upload_id = path_id(request, "upload_id")
    await _owned_upload(request, upload_id)
    try:
        # Taking the lock makes a stalled writer save what it has first, so the offset is current.
        async with request.app[tus_locks_key].hold(upload_id) as (conn, _):
            upload = await store.get_upload(conn, upload_id)
    except TusUploadLocked:
        # A writer that is still receiving keeps its lock; its committed offset is still the truth.
        upload = await _owned_upload(request, upload_id)
    if upload is None:
        raise UploadNotFound(f"upload {upload_id}")
    headers = {"Upload-Offset": str(upload.offset), "Cache-Control": "no-store", **_expires(upload)}
    if upload.length_known:
        headers["Upload-Length"] = str(upload.size)
    else:
        headers["Upload-Defer-Length"] = "1"
    if upload.tus_metadata is not None:
        headers["Upload-Metadata"] = upload.tus_metadata
    if upload.tus_concat == "partial":
        headers["Upload-Concat"] = "partial"
    elif upload.tus_concat == "final":
        headers["Upload-Concat"] = "final;" + " ".join(upload_url(request, p) for p in upload.tus_parts or ())
    return web.Response(status=200, headers=headers)


async def patch_upload(request: web.Request) -> web.Response:
    if request.content_type != OFFSET_STREAM:
        raise UnsupportedMediaType(f"a PATCH body must be sent as Content-Type: {OFFSET_STREAM}")
    offset = parse_count(request.headers.get("Upload-Offset"), "Upload-Offset", TusInvalidOffset)
    if offset is None:
        raise TusInvalidOffset("Upload-Offset is required")
    length = parse_count(request.headers.get("Upload-Length"), "Upload-Length", TusInvalidLength)
    checksum = _checksum(request)
    upload_id = path_id(request, "upload_id")
    upload = await _owned_upload(request, upload_id)
    if upload.tus_concat == "final":
        raise TusUploadIsFinal("a final upload is made of its partial uploads and takes no bytes of its own")
    upload = await _write(request, upload_id, offset, length, checksum)
    return web.Response(status=204, headers={"Upload-Offset": str(upload.offset), **_expires(upload)})


async def delete_upload(request: web.Request) -> web.Response:
    """Termination, finished or not; a PATCH in flight is stopped first (and answered 404)."""
    upload_id = path_id(request, "upload_id")
    await _owned_upload(request, upload_id, allow_expired=True)
    async with request.app[tus_locks_key].hold(upload_id, force=True) as (conn, _):
        deleted = await store.delete_upload(conn, upload_id)
    if deleted is None:
        raise UploadNotFound(f"upload {upload_id}")
    await storage.delete_file_blobs(request.app[storage_key], [deleted[1]])
    return web.Response(status=204)


async def _write(request: web.Request, upload_id: str, offset: int, length: int | None,
                 checksum: Checksum | None) -> File:
    """The body of a PATCH (or of a POST with creation-with-upload) appended under the upload's lock.
    Where aiohttp cancels the handler of a client that hung up (handler_cancellation), the write still
    runs to its end in a task of its own, so the bytes that arrived are kept all the same."""
    request[slow_by_design_key] = True  # a body takes as long as the client's link needs
    task = asyncio.create_task(_append(request, upload_id, offset, length, checksum))
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Task[File]) -> None:
    """Nobody awaits an orphaned write's outcome: take it, so asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


async def _append(request: web.Request, upload_id: str, offset: int, length: int | None,
                  checksum: Checksum | None) -> File:
    settings = request.app[settings_key]
    locks = request.app[tus_locks_key]
    async with locks.hold(upload_id) as (conn, writer):
        upload = _live(await store.get_upload(conn, upload_id), upload_id)
        if offset != upload.offset:
            raise TusOffsetMismatch(f"the upload is at offset {upload.offset}; Upload-Offset says {offset}")
        if length is not None:
            upload = await _declare_length(conn, upload, length, settings.max_upload_size)
        room = (upload.size if upload.length_known else settings.max_upload_size) - upload.offset
        if request.content_length is not None and request.content_length > room:
            raise TusLengthExceeded(f"{request.content_length} bytes sent, {room} left in the upload")
        error = await receive(request.content, conn, writer, upload,
                              Limits(room, locks.idle_timeout, settings.upload_expiry), checksum)
        upload = _live(await store.get_upload(conn, upload_id), upload_id)
        if upload.complete and upload.tus_concat is None:
            await files.mark_ready(conn, upload_id)  # False on a repeated final PATCH: exactly once
            upload = _live(await store.get_upload(conn, upload_id), upload_id)
    if error is not None:
        raise error
    return upload


async def _declare_length(conn: asyncpg.Connection, upload: File, length: int, max_size: int) -> File:
    if upload.length_known:
        if length != upload.size:
            raise TusInvalidLength(f"the upload's length is {upload.size} and cannot change")
        return upload
    if length > max_size:
        raise UploadTooLarge(f"Upload-Length {length} is above Tus-Max-Size {max_size}")
    declared = await store.declare_length(conn, upload.id, length)
    if declared is None:
        raise TusInvalidLength(f"Upload-Length {length} is below the {upload.offset} bytes already received")
    return declared


async def _owned_upload(request: web.Request, upload_id: str, *, allow_expired: bool = False) -> File:
    """The caller's upload; anyone else's is as absent as one that never was."""
    async with request.app[pool_key].acquire() as conn:
        upload = await store.get_upload(conn, upload_id)
    if upload is None or upload.uploaded_by_id != current_user(request).id:
        raise UploadNotFound(f"upload {upload_id}")
    return upload if allow_expired else _live(upload, upload_id)


def _live(upload: File | None, upload_id: str) -> File:
    if upload is None:
        raise UploadNotFound(f"upload {upload_id}")
    if upload.expired:
        raise UploadExpired(f"upload {upload_id} expired at {http_date(upload.expires_at)}; start a new one")  # type: ignore[arg-type]
    return upload


def _checksum(request: web.Request) -> Checksum | None:
    raw = request.headers.get("Upload-Checksum")
    return None if raw is None else parse_checksum(raw)


def _expires(upload: File) -> dict[str, str]:
    if upload.status != FileStatus.UPLOADING or upload.expires_at is None:
        return {}
    return {"Upload-Expires": http_date(upload.expires_at)}
