"""The native upload protocol: create a session, PUT chunks in any order, resume, complete, abort."""

from __future__ import annotations

import mimetypes
import re
from typing import Any

from aiohttp import web

from service.auth import current_user
from service.chunks import ChunkBody
from service.config import Settings
from service.errors import (
    BadRequest,
    ChunkConflict,
    ChunkOutOfRange,
    UploadClosed,
    UploadExpired,
    UploadIncomplete,
    UploadNotFound,
    UploadTooLarge,
    ValidationFailed,
)
from service.keys import body_memory_key, pool_key, settings_key
from service.media.types import classify
from service.metrics import BYTES_RECEIVED, UPLOADS_CREATED
from service.models import File, FileHints, FileStatus, NewUpload
from service.store import files, quotas
from service.store import uploads as store
from service.streaming import offer_chunk
from service.validation import DISPLAYABLE, MAX_ID_LENGTH, WHITESPACE, Field, path_id, path_int, read_json

PROTOCOL = "native"
MAX_CHUNKS = 100_000  # bounds the received/missing lists and chunk_index
MAX_CHUNK_INDEX = 2**31 - 1  # file_chunks.chunk_index is an INTEGER; past the upload's end is a 409
MAX_NAME_LENGTH = 255
SHA256_HEX_PATTERN = "^[0-9A-Fa-f]{64}$"
SHA256_HEX = re.compile(SHA256_HEX_PATTERN)
# Only shown and offered on download (the blob's name is generated): nothing that does not show as
# itself (tus drops the same characters from its metadata, see tus.file_hints).
FILENAME = Field(
    "filename",
    str,
    required=True,
    min_len=1,
    max_len=MAX_NAME_LENGTH,
    pattern=DISPLAYABLE,
    pattern_means="be displayable: no control, format or line-separator characters",
)
# service.media.types.MIMETYPE once trimmed and lower-cased
_TOKEN = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
MIMETYPE_HINT = Field(
    "mimetype",
    str,
    nullable=True,
    max_len=255,
    pattern=f"^[{WHITESPACE}]*{_TOKEN}/{_TOKEN}[{WHITESPACE}]*$",
    pattern_means="look like type/subtype",
)
SHA256 = Field(
    "sha256", str, nullable=True, max_len=64, pattern=SHA256_HEX_PATTERN, pattern_means="be 64 hexadecimal characters"
)
POST_ID = Field("post_id", str, nullable=True, min_len=1, max_len=MAX_ID_LENGTH)
SIZE = Field("size", int, required=True, minimum=0)  # above MAX_UPLOAD_SIZE: 413 UPLOAD_TOO_LARGE


def upload_fields(settings: Settings) -> tuple[Field, ...]:
    """The body of POST /api/uploads, whose bounds are this server's settings."""
    return (
        FILENAME,
        SIZE,
        Field("chunk_size", int, nullable=True, minimum=1, maximum=settings.max_chunk_size),
        MIMETYPE_HINT,
        SHA256,
        POST_ID,
    )


async def create_upload(request: web.Request) -> web.Response:
    user = current_user(request)
    settings = request.app[settings_key]
    body = await read_json(request, *upload_fields(settings))
    filename = body["filename"].strip()
    size = body["size"]
    if size > settings.max_upload_size:
        raise UploadTooLarge(f"{size} bytes is more than MAX_UPLOAD_SIZE ({settings.max_upload_size})")
    chunk_size = body.get("chunk_size") or settings.default_chunk_size
    if -(-size // chunk_size) > MAX_CHUNKS:
        raise ValidationFailed(
            f"chunk_size {chunk_size} makes more than {MAX_CHUNKS} chunks; use larger chunks", field="chunk_size"
        )
    mimetype = _mimetype(body.get("mimetype"), filename)
    new = NewUpload.start(
        user.id,
        FileHints(filename, mimetype, classify(mimetype)),
        size,
        settings,
        PROTOCOL,
        chunk_size=chunk_size,
        sha256=_sha256(body.get("sha256")),
        post_id=body.get("post_id"),
    )
    async with request.app[pool_key].acquire() as conn, conn.transaction():
        await quotas.check_quota(conn, user.id, size, settings.user_quota)
        upload = await files.insert_upload(conn, new)
    UPLOADS_CREATED.labels(PROTOCOL).inc()
    return web.json_response(upload_view(upload), status=201, headers={"Location": f"/api/uploads/{upload.id}"})


async def get_upload(request: web.Request) -> web.Response:
    """What the server holds: the stored chunks while UPLOADING, all of them once complete (in chunks
    or, once COMPLETED, in the file), none of a FAILED upload (its chunks were dropped) — with its error."""
    async with request.app[pool_key].acquire() as conn:
        upload = await _load(conn, request, allow_closed=True)
        received = await store.list_received_chunks(conn, upload.id) if upload.status == FileStatus.UPLOADING else None
    if upload.status == FileStatus.FAILED:
        received = []
    elif received is None:
        received = list(range(upload.total_chunks))
    present = set(received)
    return web.json_response(
        {
            **upload_view(upload),
            "received": received,
            "error": upload.error,
            "missing": [i for i in range(upload.total_chunks) if i not in present],
        }
    )


async def put_chunk(request: web.Request) -> web.Response:
    settings = request.app[settings_key]
    index = path_int(request, "index", 0, MAX_CHUNK_INDEX)
    declared = _content_sha256(request)
    async with request.app[pool_key].acquire() as conn:
        upload = await _load(conn, request)
    if index >= upload.total_chunks:
        raise ChunkOutOfRange(
            f"chunk {index} of an upload of {upload.total_chunks} chunks (0..{upload.total_chunks - 1})"
        )
    expected = upload.chunk_length(index)
    body = ChunkBody(request, expected, settings.max_chunk_size, index, declared)
    # The body is held until the answer, and the database driver holds a copy of it while it is stored.
    with request.app[body_memory_key].admit(current_user(request).id) as share:
        data = await body.read(share)  # whole, before any connection is taken: none waits on a client's link
        async with request.app[pool_key].acquire_bulk() as conn:  # within the bulk share: polls stay quick
            received = await store.insert_chunk(conn, upload.id, index, data)
            stored_sha256 = await store.get_chunk_sha256(conn, upload.id, index) if received is None else None
        if received is not None:
            offer_chunk(request.app, upload, index, data)  # committed: the streamer need not read it back
            BYTES_RECEIVED.labels(PROTOCOL).inc(expected)
            return web.json_response({"index": index, "size": expected, "bytes_received": received}, status=201)
        if stored_sha256 is None:
            raise UploadClosed(f"upload {upload.id} stopped accepting chunks")
        if stored_sha256 != await body.sha256():
            raise ChunkConflict(f"chunk {index} is already stored with different bytes (sha256 {stored_sha256})")
    return web.json_response({"index": index, "size": expected, "bytes_received": upload.bytes_received}, status=200)


async def complete_upload(request: web.Request) -> web.Response:
    # The whole file's SHA-256 may come now rather than at creation: a client can then start sending
    # before it has read the file once.
    sha256 = _sha256((await read_json(request, SHA256)).get("sha256")) if request.body_exists else None
    async with request.app[pool_key].acquire() as conn:
        upload = await _load(conn, request, allow_closed=True)
        if upload.status == FileStatus.FAILED:
            raise UploadClosed(f"upload {upload.id} FAILED")
        missing = await store.complete_upload(conn, upload, sha256)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
        raise UploadIncomplete(f"{len(missing)} of {upload.total_chunks} chunks missing: {shown}", missing=missing)
    status = FileStatus.PROCESSING if upload.status == FileStatus.UPLOADING else upload.status
    return web.json_response(
        {"id": upload.id, "status": status, "file_url": f"/api/files/{upload.id}"},
        status=202,
        headers={"Location": f"/api/files/{upload.id}"},
    )


async def delete_upload(request: web.Request) -> web.Response:
    user = current_user(request)
    async with request.app[pool_key].acquire() as conn:
        upload = await _load(conn, request, allow_closed=True, allow_expired=True)
        if not await store.delete_upload(conn, upload.id, user.id):
            raise UploadClosed(f"upload {upload.id} is {upload.status}; delete the file instead")
    return web.Response(status=204)


def upload_view(upload: File) -> dict[str, Any]:
    return {
        "id": upload.id,
        "status": upload.status,
        "filename": upload.original_name,
        "mimetype": upload.mimetype,
        "size": upload.size,
        "chunk_size": upload.chunk_size,
        "total_chunks": upload.total_chunks,
        "bytes_received": upload.bytes_received,
        "sha256": upload.sha256,
        "expires_at": upload.expires_at.isoformat() if upload.expires_at else None,
        "created_at": upload.created_at.isoformat(),
        "file_url": f"/api/files/{upload.id}",
    }


async def _load(conn: Any, request: web.Request, *, allow_closed: bool = False, allow_expired: bool = False) -> File:
    """The caller's upload, or the reason it cannot be used: 404 (missing or another user's), 410, 409."""
    file_id = path_id(request)
    upload = await store.get_upload(conn, file_id, current_user(request).id)
    if upload is None:
        raise UploadNotFound(f"upload {file_id}")
    if upload.status == FileStatus.UPLOADING and upload.expired and not allow_expired:
        raise UploadExpired(f"upload {file_id} expired at {upload.expires_at and upload.expires_at.isoformat()}")
    if upload.status != FileStatus.UPLOADING and not allow_closed:
        raise UploadClosed(f"upload {file_id} is {upload.status}: it takes no more chunks")
    return upload


# request parsing ---------------------------------------------------------------------------------
def _mimetype(value: str | None, filename: str) -> str:
    """The client's claim, or a guess from the name; only a hint until the worker reads the bytes."""
    if value is None:
        return mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"
    return value.strip().lower()  # MIMETYPE_HINT checked its form


def _sha256(value: str | None) -> str | None:
    if value is None:
        return None
    return value.lower()  # SHA256 checked its form


def _content_sha256(request: web.Request) -> str | None:
    value = request.headers.get("Content-SHA256")
    if value is None:
        return None
    if not SHA256_HEX.fullmatch(value.strip()):
        raise BadRequest("Content-SHA256 must be the hex SHA-256 of the body (64 characters)")
    return value.strip().lower()
