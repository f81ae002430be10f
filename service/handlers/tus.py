"""tus 1.0 at /api/tus/: OPTIONS, POST (creation, creation-with-upload, defer-length, concatenation),
HEAD, PATCH and DELETE, each a checklist with early returns. An upload is a `files` row: its URL
/api/tus/{id} has the id of /api/files/{id}, and once complete the worker processes it like any other."""

from __future__ import annotations

from aiohttp import web

from service.append import AppendRequest, append, cancel, look
from service.auth import current_user
from service.errors import (
    ApiError,
    MethodNotAllowed,
    TusInvalidConcat,
    TusInvalidLength,
    TusInvalidOffset,
    UnsupportedMediaType,
    UploadTooLarge,
)
from service.handlers import rufh as rufh_handlers
from service.keys import pool_key, settings_key
from service.metrics import UPLOADS_CREATED
from service.models import File, FileHints, FileStatus, NewUpload
from service.rufh import PARTIAL_UPLOAD
from service.rufh import Limits as RufhLimits
from service.store import files, quotas
from service.store import tus as store
from service.tus import (
    CHECKSUMS,
    EXTENSIONS,
    OFFSET_STREAM,
    TUS_VERSION,
    Checksum,
    Concat,
    effective_method,
    file_hints,
    http_date,
    is_rufh,
    parse_checksum,
    parse_concat,
    parse_count,
    parse_metadata,
    upload_url,
)
from service.validation import path_id


async def dispatch_collection(request: web.Request) -> web.StreamResponse:
    """/api/tus/: one route for every method, so X-HTTP-Method-Override can pick the handler, and for
    both protocols: a request of the IETF draft (its fields, no Tus-Resumable) goes to handlers/rufh.py."""
    method = effective_method(request)
    if method == "OPTIONS":
        return get_options(request)
    if method == "POST":
        return await (rufh_handlers.create_upload(request) if is_rufh(request) else create_upload(request))
    raise MethodNotAllowed(f"{method} is not allowed here; allowed: OPTIONS, POST", headers={"Allow": "OPTIONS, POST"})


async def dispatch_upload(request: web.Request) -> web.StreamResponse:
    method = effective_method(request)
    if method == "OPTIONS":
        return get_options(request)
    if is_rufh(request):
        handlers = {
            "HEAD": rufh_handlers.head_upload,
            "PATCH": rufh_handlers.patch_upload,
            "DELETE": rufh_handlers.delete_upload,
        }
    else:
        handlers = {"HEAD": head_upload, "PATCH": patch_upload, "DELETE": delete_upload}
    handler = handlers.get(method)
    if handler is None:
        allowed = "DELETE, HEAD, OPTIONS, PATCH"
        raise MethodNotAllowed(f"{method} is not allowed here; allowed: {allowed}", headers={"Allow": allowed})
    return await handler(request)


def get_options(request: web.Request) -> web.Response:
    """What both protocols need to know before they start: tus's Tus-* fields, and for the draft the
    media type of its appends (Accept-Patch, with tus's beside it) and the limits of a new upload."""
    settings = request.app[settings_key]
    return web.Response(
        status=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Max-Size": str(settings.max_upload_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            "Accept-Patch": f"{PARTIAL_UPLOAD}, {OFFSET_STREAM}",
            "Upload-Limit": RufhLimits.of(settings).header(settings.upload_expiry),
        },
    )


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

    async with request.app[pool_key].acquire() as conn, conn.transaction():
        await quotas.check_quota(conn, user.id, length or 0, settings.user_quota)
        upload = await files.insert_upload(
            conn,
            # Upload-Length: 0 is done at once
            NewUpload.start(
                user.id,
                hints,
                length,
                settings,
                "tus",
                tus_metadata=raw_metadata,
                tus_concat=concat.kind if concat else None,
            ),
        )
    UPLOADS_CREATED.labels("tus").inc()
    location = upload_url(request, upload.id)
    headers = {"Location": location}
    if request.content_type == OFFSET_STREAM:  # creation-with-upload
        try:
            upload = (await append(request, upload.id, AppendRequest("tus", 0, verifier=checksum))).upload
        except ApiError as e:
            e.headers.setdefault("Location", location)  # the upload exists: the client can resume it
            raise
        headers["Upload-Offset"] = str(upload.offset)
    return web.Response(status=201, headers={**headers, **_expires(upload)})


async def _create_final(
    request: web.Request, concat: Concat, raw_metadata: str | None, hints: FileHints
) -> web.Response:
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
        final = await files.insert_upload(
            conn,
            NewUpload.start(
                user.id, hints, size, settings, "tus", tus_metadata=raw_metadata, tus_concat="final", tus_parts=part_ids
            ),
        )
        await store.move_chunks(conn, final.id, part_ids)
        await files.mark_ready(conn, final.id)
    UPLOADS_CREATED.labels("tus").inc()
    return web.Response(status=201, headers={"Location": upload_url(request, final.id)})


async def head_upload(request: web.Request) -> web.Response:
    upload = await look(request, path_id(request, "upload_id"), "tus")
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
    appended = await append(
        request, path_id(request, "upload_id"), AppendRequest("tus", offset, length, verifier=_checksum(request))
    )
    return web.Response(status=204, headers={"Upload-Offset": str(appended.upload.offset), **_expires(appended.upload)})


async def delete_upload(request: web.Request) -> web.Response:
    """Termination, finished or not; a PATCH in flight is stopped first (and answered 404)."""
    await cancel(request, path_id(request, "upload_id"), "tus")
    return web.Response(status=204)


def _checksum(request: web.Request) -> Checksum | None:
    raw = request.headers.get("Upload-Checksum")
    return None if raw is None else parse_checksum(raw)


def _expires(upload: File) -> dict[str, str]:
    if upload.status != FileStatus.UPLOADING or upload.expires_at is None:
        return {}
    return {"Upload-Expires": http_date(upload.expires_at)}
