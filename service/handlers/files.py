"""The files API: status (ETag, long-poll), server-sent events, content with Range, thumbnail, list, delete."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from service import auth, links, storage
from service.auth import current_user
from service.db import DATABASE_DOWN
from service.errors import (
    ApiError,
    DatabaseUnavailable,
    FileNotFound,
    FileNotReady,
    RangeNotSatisfiable,
    ThumbnailNotFound,
    problem_body,
)
from service.keys import file_events_key, link_key, pool_key, settings_key, slow_by_design_key, storage_key
from service.models import TERMINAL_STATUSES, File, FileStatus, FileType
from service.storage import BlobNotFound, BlobStore
from service.store import files as store
from service.validation import path_id, query_choice, query_int, read_page

MAX_WAIT = 60  # seconds a long-poll may ask for
FALLBACK_POLL = 5.0  # seconds between re-reads while waiting, in case a NOTIFY was lost
PRESIGNED_SECONDS = 300  # lifetime of a DOWNLOAD_REDIRECT URL: enough to start the download, too short to share
SSE_KEEPALIVE = 15.0  # seconds between comments on an idle event stream (proxies close silent ones)
# Served bytes are the user's, not ours: never rendered, never sniffed, never scripted.
CONTENT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, no-cache",
}
# Images a browser may show inline when asked (?disposition=inline), under the sandbox above; SVG is
# a document that can carry script, so it stays a download.
INLINE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/heic",
        "image/heif",
        "image/tiff",
    }
)


@auth.checks_its_caller
async def get_file(request: web.Request) -> web.Response:
    """With ?wait=N and a file still UPLOADING or PROCESSING, answers as soon as its status changes
    (at most N seconds); with If-None-Match, only when the client's copy is current."""
    wait = query_int(request, "wait", 0, 0, MAX_WAIT)
    if wait:
        request[slow_by_design_key] = True
    known = _if_none_match(request)
    file_id = path_id(request)
    with request.app[file_events_key].subscribe(file_id) as changed:
        file = await _load(request, file_id)
        polled = _Polled(request, file)
        if wait and file.status not in TERMINAL_STATUSES and (not known or _matches(polled.etag, known)):
            file = await _wait_for_change(request, file, changed, wait)
            polled = _Polled(request, file)
    headers = {"ETag": polled.etag, "Cache-Control": "private, no-cache"}
    if _matches(polled.etag, known):
        return web.Response(status=304, headers=headers)
    return web.json_response(polled.view(), headers=headers)


async def get_file_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the file now, then one `status` event per change, until COMPLETED or
    FAILED (or `deleted`, or `error` when the database is gone). Driven by the file_status NOTIFY,
    with a re-read at every keep-alive."""
    request[slow_by_design_key] = True
    file_id = path_id(request)
    with request.app[file_events_key].subscribe(file_id) as changed:
        file: File | None = await _load(request, file_id)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        sent = None
        while True:
            if file is None:
                await response.write(b'event: deleted\ndata: {"id": %s}\n\n' % json.dumps(file_id).encode())
                break
            if file.status != sent:
                view = file_view(file, request)
                await response.write(f"event: status\ndata: {json.dumps(view)}\n\n".encode())
                sent = file.status
            if file.status in TERMINAL_STATUSES:
                break
            try:
                await asyncio.wait_for(changed.wait(), SSE_KEEPALIVE)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
            changed.clear()
            try:
                file = await _find(request, file_id)
            except DATABASE_DOWN:
                # Too late for an error response: the stream says so and ends cleanly, and the client
                # (EventSource reconnects by itself) opens a new one.
                problem = DatabaseUnavailable("the database cannot be reached; reconnect shortly")
                await response.write(f"event: error\ndata: {json.dumps(problem_body(problem))}\n\n".encode())
                break
        await response.write_eof()
        return response


async def get_file_content(request: web.Request) -> web.StreamResponse:
    """A download (`attachment`), or with ?disposition=inline an image shown in the browser, sandboxed."""
    disposition = query_choice(request, "disposition", ("attachment", "inline")) or "attachment"
    file = await _load_readable(request, path_id(request))
    if file.status != FileStatus.COMPLETED:
        raise FileNotReady(f"file {file.id} is {file.status}")
    if file.mimetype not in INLINE_TYPES:
        disposition = "attachment"
    return await _serve(
        request,
        storage.blob_key(file.filename),
        FileNotFound(f"file {file.id} has no bytes stored"),
        file.mimetype or "application/octet-stream",
        content_disposition(file.original_name, disposition),
    )


async def get_file_thumbnail(request: web.Request) -> web.StreamResponse:
    file = await _load_readable(request, path_id(request))
    thumbnail = (file.metadata or {}).get("thumbnail")
    if file.status != FileStatus.COMPLETED or not thumbnail:
        raise ThumbnailNotFound(f"file {file.id} has no thumbnail")
    key = storage.thumbnail_key(file.filename, thumbnail["mimetype"])
    return await _serve(
        request, key, ThumbnailNotFound(f"file {file.id} has no thumbnail stored"), thumbnail["mimetype"], "inline"
    )


async def _serve(
    request: web.Request, key: str, missing: ApiError, content_type: str, disposition: str | None
) -> web.StreamResponse:
    """The object under key: a redirect to a presigned URL (DOWNLOAD_REDIRECT with a store that makes
    them), sendfile from a local directory, or streamed from the store, with the same Range rules."""
    blobs = request.app[storage_key]
    headers = {"Content-Type": content_type, **({"Content-Disposition": disposition} if disposition else {})}
    if request.app[settings_key].download_redirect:
        if await blobs.head(key) is None:
            raise missing
        url = await blobs.presign_get(key, PRESIGNED_SECONDS, content_type, disposition)
        if url is not None:
            return web.Response(
                status=302, headers={"Location": url, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
            )
    path = blobs.local_path(key)
    if path is not None:
        return await _send_file(request, path, missing, headers)
    return await _stream(request, blobs, key, missing, headers)


async def _send_file(request: web.Request, path: Path, missing: ApiError, headers: dict[str, str]) -> web.FileResponse:
    """FileResponse answers a missing file or a bad Range itself, with a bare body in the file's
    Content-Type; those refusals are made here instead, as problems (same rules as aiohttp's)."""
    try:
        size = (await asyncio.to_thread(path.stat)).st_size
    except FileNotFoundError:
        raise missing from None
    if "Range" in request.headers and request.if_range is None:  # with If-Range, aiohttp may ignore Range
        _byte_range(request, size)
    return web.FileResponse(path, headers={**headers, **CONTENT_HEADERS})


async def _stream(
    request: web.Request, blobs: BlobStore, key: str, missing: ApiError, headers: dict[str, str]
) -> web.StreamResponse:
    info = await blobs.head(key)
    if info is None:
        raise missing
    modified = datetime.fromtimestamp(int(info.modified), UTC)
    wanted = None
    if "Range" in request.headers and (request.if_range is None or request.if_range >= modified):
        wanted = _byte_range(request, info.size)
    start, length = wanted or (0, info.size)
    response = web.StreamResponse(status=206 if wanted else 200, headers={**headers, **CONTENT_HEADERS})
    response.headers["Accept-Ranges"] = "bytes"
    response.last_modified = modified
    response.content_length = length
    if wanted:
        response.headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{info.size}"
    if request.method == "HEAD":
        await response.prepare(request)
        return response
    try:
        pieces = await blobs.get(key, start, length)
    except BlobNotFound:
        raise missing from None
    await response.prepare(request)
    async with contextlib.aclosing(pieces):  # type: ignore[type-var]
        # The next piece is fetched from the store while this one goes to the client.
        fetching = asyncio.ensure_future(anext(pieces, None))
        try:
            while (piece := await fetching) is not None:
                fetching = asyncio.ensure_future(anext(pieces, None))
                await response.write(piece)
        finally:
            if not fetching.done():
                fetching.cancel()
                await asyncio.wait([fetching])
    await response.write_eof()
    return response


def _byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """(start, length) of the one range asked for; RangeNotSatisfiable (416) if it is malformed or
    starts past the end. A range reaching past the end is cut to it (RFC 9110)."""
    unsatisfiable = {"Content-Range": f"bytes */{size}"}
    try:
        asked = request.http_range
    except ValueError:
        raise RangeNotSatisfiable(
            "Range must be one `bytes=start-end`, `bytes=start-` or `bytes=-suffix`", headers=unsatisfiable
        ) from None
    if asked.start is None:
        return None
    start, stop = (max(size + asked.start, 0), size) if asked.start < 0 else (asked.start, asked.stop)
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        raise RangeNotSatisfiable(f"the file has {size} bytes", headers=unsatisfiable)
    return start, stop - start


async def list_files(request: web.Request) -> web.Response:
    """The caller's files, newest first; an admin sees everyone's."""
    user = current_user(request)
    status = query_choice(request, "status", FileStatus)
    type_ = query_choice(request, "type", FileType)
    page = read_page(request)  # the rule of every list: limit 10 by default, capped at 100
    async with request.app[pool_key].acquire() as conn:
        files, total = await store.list_files(
            conn, None if user.is_admin else user.id, status, type_, page.limit, page.offset
        )
    return web.json_response({"files": [file_view(f, request) for f in files], "pagination": page.pagination(total)})


async def delete_file(request: web.Request) -> web.Response:
    user = current_user(request)
    file_id = path_id(request)
    async with request.app[pool_key].acquire() as conn:
        file = await store.delete_file(conn, file_id, user.id, user.is_admin)
    if file is None:
        raise FileNotFound(f"file {file_id}")
    await storage.delete_file_blobs(request.app[storage_key], [file.filename])
    return web.Response(status=204)


def file_view(file: File, request: web.Request) -> dict[str, Any]:
    """The file as its API shows it, with signed links for the caller (service/links.py): content once
    COMPLETED, the thumbnail when there is one, the event stream always."""
    return _with_links(_file_state(file), request, links.expiry(request.app[settings_key]))


def _file_state(file: File) -> dict[str, Any]:
    """What the view says about the file itself: everything but the links made for its viewer. The API
    paths are computed here, never stored: content once COMPLETED, the thumbnail when there is one."""
    completed = file.status == FileStatus.COMPLETED
    thumbnail = completed and "thumbnail" in (file.metadata or {})
    return {
        "id": file.id,
        "status": file.status,
        "type": file.type,
        "mimetype": file.mimetype,
        "size": file.size,
        "original_name": file.original_name,
        "url": f"/api/files/{file.id}/content" if completed else None,
        "thumbnail": f"/api/files/{file.id}/thumbnail" if thumbnail else None,
        "metadata": file.metadata,
        "error": file.error,
        "post_id": file.post_id,
        "uploaded_by_id": file.uploaded_by_id,
        "created_at": file.created_at.isoformat(),
        "updated_at": file.updated_at.isoformat(),
    }


def _with_links(state: dict[str, Any], request: web.Request, expires: int) -> dict[str, Any]:
    settings, viewer, file_id = request.app[settings_key], current_user(request).id, state["id"]
    completed = state["status"] == FileStatus.COMPLETED
    return {
        **state,
        "content_url": links.sign(settings, file_id, viewer, "content", expires) if completed else None,
        "thumbnail_url": (
            links.sign(settings, file_id, viewer, "thumbnail", expires) if completed and state["thumbnail"] else None
        ),
        "events_url": links.sign(settings, file_id, viewer, "events", expires),
    }


def content_disposition(name: str, disposition: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback for old clients, and the exact name in RFC 5987 `filename*`."""
    fallback = re.sub(r'[^\x20-\x7e]|["\\%;]', "_", name).strip() or "download"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def _wait_for_change(request: web.Request, file: File, changed: asyncio.Event, wait: float) -> File:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    current = file
    while (remaining := deadline - loop.time()) > 0:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), min(remaining, FALLBACK_POLL))
        changed.clear()
        current = await _load(request, file.id)
        if current.status != file.status:
            break
    return current


async def _find(request: web.Request, file_id: str) -> File | None:
    """A signed link is a grant of its own (a post's reader sees its author's files): it opens its
    file whoever owns it. Otherwise only the owner or an admin."""
    claims = auth.pending_caller(request)
    async with request.app[pool_key].acquire() as conn:
        # A status poll: the session or API token, its user and the file in one statement.
        if isinstance(claims, auth.SessionClaims):
            user_found, file = await store.get_session_file(conn, claims.session_id, claims.user_id, file_id)
            auth.accept_caller(request, claims, user_found)
            return file
        if isinstance(claims, auth.TokenClaims):
            token_found, file = await store.get_token_file(conn, claims.token_hash, file_id)
            auth.accept_caller(request, claims, token_found)
            return file
        user = current_user(request)
        link = request.get(link_key)
        granted = user.is_admin or (link is not None and link.file_id == file_id)
        return await store.get_file(conn, file_id, user.id, granted)


async def _load(request: web.Request, file_id: str) -> File:
    """The file if the caller may see it (owner or admin); 404 for anyone else, as for a missing one."""
    file = await _find(request, file_id)
    if file is None:
        raise FileNotFound(f"file {file_id}")
    return file


async def _load_readable(request: web.Request, file_id: str) -> File:
    """For its bytes (content, thumbnail): as _load, and also whoever may read the published post the
    file is attached to, so that a post's listing never links to a 404."""
    user = current_user(request)
    link = request.get(link_key)
    async with request.app[pool_key].acquire() as conn:
        granted = user.is_admin or (link is not None and link.file_id == file_id)
        file = await store.get_readable_file(conn, file_id, user.id, granted)
    if file is None:
        raise FileNotFound(f"file {file_id}")
    return file


class _Polled:
    """A status answer: the ETag names the file's state, its viewer and the expiry of the links a 200
    would carry (links.expiry, one value per LINK_TTL/2). So an unchanged file answers 304 for
    LINK_TTL/2 at a time, and a 304 only ever confirms links that have at least LINK_TTL/2 to live:
    at the expiry step the ETag changes and the poller gets a 200 with fresh links. The view (and its
    HMAC-signed links) is made only for a 200."""

    def __init__(self, request: web.Request, file: File) -> None:
        self.request, self.state = request, _file_state(file)
        self.expires = links.expiry(request.app[settings_key])
        named = json.dumps([self.state, current_user(request).id, self.expires], sort_keys=True)
        self.etag = '"' + hashlib.sha256(named.encode()).hexdigest()[:32] + '"'

    def view(self) -> dict[str, Any]:
        return _with_links(self.state, self.request, self.expires)


def _if_none_match(request: web.Request) -> set[str]:
    header = request.headers.get("If-None-Match", "")
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _matches(etag: str, known: set[str]) -> bool:
    return etag in known or "*" in known
