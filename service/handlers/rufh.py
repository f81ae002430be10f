"""Resumable Uploads for HTTP (the IETF draft) at /api/tus/, beside tus: creation by POST with
Upload-Complete (and a 104 naming the upload), offset retrieval by HEAD, append by PATCH, cancellation
by DELETE. handlers/tus.py dispatches here on the request's fields (service/rufh.py is_rufh). An upload
is a `files` row like any other: its URL /api/tus/{id} has the id of /api/files/{id}, its bytes go
through the one append routine (service/append.py), and once complete the worker processes it."""

from __future__ import annotations

from aiohttp import web

from service import rufh
from service.append import AppendRequest, append, cancel, look
from service.auth import current_user
from service.errors import (
    ApiError,
    AppendTooLarge,
    AppendTooSmall,
    RufhInconsistentLength,
    RufhInvalidField,
    UnsupportedMediaType,
    UploadTooLarge,
    UploadTooSmall,
)
from service.handlers.files import file_view
from service.keys import pool_key, settings_key
from service.metrics import UPLOADS_CREATED
from service.models import File, FileStatus, NewUpload
from service.rufh import PARTIAL_UPLOAD, Limits, boolean, max_age
from service.store import files, quotas
from service.tus import upload_url
from service.validation import path_id

PROTOCOL = "rufh"


async def create_upload(request: web.Request) -> web.StreamResponse:
    """Upload creation: the row first, then the 104 that tells the client where to resume, then the
    content (if any) through the append routine. Every check that needs no row runs before the row."""
    user = current_user(request)
    settings = request.app[settings_key]
    limits = Limits.of(settings)
    version = rufh.interop_version(request)
    complete = _required_complete(request)
    length = _length(request, complete, offset=0)
    sent = request.content_length
    if length is not None and length > limits.max_size:
        raise UploadTooLarge(
            f"a length of {length} is above max-size {limits.max_size}",
            headers={"Upload-Limit": limits.header(settings.upload_expiry)},
        )
    if limits.min_size and (length is None or length < limits.min_size):
        raise UploadTooSmall(
            f"uploads here have at least {limits.min_size} bytes (min-size); "
            f"{'this one says ' + str(length) if length is not None else 'send Upload-Length'}"
        )
    if sent is not None and sent > limits.max_append_size:
        raise AppendTooLarge(
            f"{sent} bytes in one request; at most {limits.max_append_size} (max-append-size)",
            headers={"Upload-Limit": limits.header(settings.upload_expiry)},
        )
    if sent is not None and sent < limits.min_append_size and not complete:
        raise AppendTooSmall(
            f"{sent} bytes; a request that does not complete the upload carries at least "
            f"{limits.min_append_size} (min-append-size)"
        )
    verifier = rufh.content_digest(request)
    sha256 = rufh.repr_digest(request)
    hints = rufh.hints(request)

    async with request.app[pool_key].acquire() as conn, conn.transaction():
        await quotas.check_quota(conn, user.id, length or 0, settings.user_quota)
        upload = await files.insert_upload(
            conn,
            NewUpload.start(user.id, hints, length, settings, PROTOCOL, sha256=sha256),
        )
    UPLOADS_CREATED.labels(PROTOCOL).inc()
    resource = {"Location": upload_url(request, upload.id), "Upload-Limit": limits.header(max_age(upload.expires_at))}
    await rufh.send_104(request, version, resource)

    file: File | None = None
    if complete or request.body_exists:
        try:
            appended = await append(
                request,
                upload.id,
                AppendRequest(
                    PROTOCOL,
                    0,
                    length,
                    completes=complete,
                    verifier=verifier,
                    progress=rufh.progress_104s(request, version),
                ),
            )
        except ApiError as e:
            for name, value in resource.items():  # the upload exists: the client can resume it
                e.headers.setdefault(name, value)
            raise
        upload, file = appended.upload, appended.file
    return _answer(request, 201, resource, upload, file)


async def head_upload(request: web.Request) -> web.Response:
    """Offset retrieval: 204 with the upload's state, never cached."""
    rufh.interop_version(request)
    upload = await look(request, path_id(request, "upload_id"), PROTOCOL)
    limits = Limits.of(request.app[settings_key])
    headers = {
        "Upload-Offset": str(upload.offset),
        "Upload-Complete": boolean(upload.closed),
        "Upload-Limit": limits.header(max_age(upload.expires_at) if not upload.closed else None),
        "Cache-Control": "no-store",
    }
    if upload.length_known:
        headers["Upload-Length"] = str(upload.size)
    assembled = (upload.metadata or {}).get("sha256") if upload.status == FileStatus.COMPLETED else None
    if assembled:  # processed: the digest of what the server holds, for the client to compare
        headers["Repr-Digest"] = rufh.sha256_field(assembled)
    return web.Response(status=204, headers=headers)


async def patch_upload(request: web.Request) -> web.StreamResponse:
    """Upload append: the content at Upload-Offset, completing the upload with Upload-Complete: ?1."""
    version = rufh.interop_version(request)
    if request.content_type != PARTIAL_UPLOAD:
        raise UnsupportedMediaType(
            f"an append is sent as Content-Type: {PARTIAL_UPLOAD}", headers={"Accept-Patch": PARTIAL_UPLOAD}
        )
    complete = _required_complete(request)
    offset = rufh.upload_offset(request)
    if offset is None:
        raise RufhInvalidField("Upload-Offset (a non-negative sf-integer) is required")
    length = _length(request, complete, offset)
    appended = await append(
        request,
        path_id(request, "upload_id"),
        AppendRequest(
            PROTOCOL,
            offset,
            length,
            completes=complete,
            verifier=rufh.content_digest(request),
            progress=rufh.progress_104s(request, version),
        ),
    )
    return _answer(request, 200 if appended.file else 204, {}, appended.upload, appended.file)


async def delete_upload(request: web.Request) -> web.Response:
    """Cancellation: the upload, its bytes and any request still writing them are gone."""
    rufh.interop_version(request)
    await cancel(request, path_id(request, "upload_id"), PROTOCOL)
    return web.Response(status=204)


def _required_complete(request: web.Request) -> bool:
    complete = rufh.upload_complete(request)
    if complete is None:
        raise RufhInvalidField("Upload-Complete (?0 or ?1, an sf-boolean) is required")
    return complete


def _length(request: web.Request, complete: bool, offset: int) -> int | None:
    """The upload's length as this request indicates it: Upload-Length, and with Upload-Complete: ?1 the
    offset plus Content-Length. Both present must agree."""
    declared = rufh.upload_length(request)
    sent = request.content_length
    implied = offset + sent if complete and sent is not None else None
    if declared is not None and implied is not None and declared != implied:
        raise RufhInconsistentLength(
            f"Upload-Length says {declared}, Upload-Complete with Content-Length says {implied}"
        )
    return declared if declared is not None else implied


def _answer(
    request: web.Request, status: int, headers: dict[str, str], upload: File, file: File | None
) -> web.Response:
    """A completed upload answers as the collection does for a new file: its JSON (the worker takes it
    from here; GET /api/files/{id} follows it), with Upload-Complete: ?1. An incomplete one says where
    it stands."""
    headers = {
        **headers,
        "Upload-Complete": boolean(file is not None or upload.closed),
        "Upload-Offset": str(upload.offset),
    }
    if file is None:
        return web.Response(status=status, headers=headers)
    headers["Content-Location"] = f"/api/files/{file.id}"
    return web.json_response(file_view(file, request), status=status, headers=headers)
