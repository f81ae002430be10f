"""The OpenAPI 3.1 document of the HTTP API, built from the route table: every route the server has is
described here (tests/test_openapi.py walks the router), and only routes the server has are emitted."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from service import __version__, links
from service.auth import PUBLIC_PATHS
from service.config import Settings
from service.handlers import auth, files, posts, tokens, uploads, users, webhooks
from service.handlers.admin import DAILY_DAYS_DEFAULT, DAILY_DAYS_MAX
from service.models import FileStatus, FileType
from service.validation import MAX_ID_LENGTH, MAX_LIMIT, MAX_PAGE, MAX_QUERY_INT, NO_NUL, Field

JSON = "application/json"
PROBLEM = {"$ref": "#/components/schemas/Problem"}
OBJECT: dict[str, Any] = {"type": "object"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


Param = tuple[str, "str | dict[str, Any]", str]  # (name, a JSON type or a schema, description)


def _schema(kind: str | dict[str, Any]) -> dict[str, Any]:
    return {"type": kind} if isinstance(kind, str) else kind


def op(
    summary: str,
    tag: str,
    ok: dict[int, Any],
    *,
    body: dict[str, Any] | None = None,
    query: tuple[Param, ...] = (),
    errors: tuple[int, ...] = (),
    admin: bool = False,
    headers: tuple[Param, ...] = (),
    required_headers: frozenset[str] = frozenset(),
    body_required: bool = True,
) -> dict[str, Any]:
    """One operation. ok: {status: schema, or a description string for bodiless answers}.
    query/headers: (name, JSON type or schema, description). Errors are problem+json; a JSON body adds
    the answers of service.validation.read_json (400 INVALID_JSON, 415, 422)."""
    responses: dict[str, Any] = {}
    for status, schema in ok.items():
        if isinstance(schema, str):
            responses[str(status)] = {"description": schema}
        else:
            responses[str(status)] = {"description": "OK", "content": {JSON: {"schema": schema}}}
    codes = set(errors) | ({403} if admin else set()) | ({400, 415, 422} if body and JSON in body else set())
    for status in sorted(codes):
        responses[str(status)] = {"$ref": f"#/components/responses/Problem{status}"}
    operation: dict[str, Any] = {
        "summary": summary + (" (admin)" if admin else ""),
        "tags": [tag],
        "responses": responses,
    }
    parameters = [
        {"name": n, "in": "query", "required": False, "schema": _schema(t), "description": d} for n, t, d in query
    ]
    parameters += [
        {"name": n, "in": "header", "required": n in required_headers, "schema": _schema(t), "description": d}
        for n, t, d in headers
    ]
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": body}
    return operation


def _json_body(*fields: Field) -> dict[str, Any]:
    """The JSON object service.validation.read_json reads with these fields: nothing else in it."""
    schema = {
        "type": "object",
        "properties": {f.name: f.schema() for f in fields},
        "required": [f.name for f in fields if f.required],
        "additionalProperties": False,
    }
    return {JSON: {"schema": schema}}


STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
PAGE: tuple[Param, ...] = (
    ("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page number, from 1"),
    (
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_QUERY_INT},
        f"items per page: 10 by default, above {MAX_LIMIT} counted as {MAX_LIMIT} (every list)",
    ),
)
COUNT = {"type": "string", "pattern": "^[0-9]{1,19}$"}
_B64 = "[A-Za-z0-9+/]"
_ITEM = f" *[!-+\\--~]+(?: +(?:{_B64}{{4}})*(?:{_B64}{{2}}==|{_B64}{{3}}=)?)? *"  # service.tus.parse_metadata
TUS_HEADERS: tuple[Param, ...] = (
    ("Tus-Resumable", {"enum": ["1.0.0"]}, "tus: every request but OPTIONS (412 without, unless it is the draft's)"),
    ("Upload-Offset", COUNT, "bytes already stored"),
    ("Upload-Length", COUNT, "total size"),
    ("Upload-Metadata", {"type": "string", "pattern": f"^{_ITEM}(?:,{_ITEM})*$"}, "key base64 pairs, keys unique"),
    (
        "Upload-Checksum",
        {"type": "string", "pattern": f"^ *(?:sha1 +{_B64}{{27}}=|sha256 +{_B64}{{43}}=|md5 +{_B64}{{22}}==) *$"},
        "algorithm and base64 digest of this request's body",
    ),
)
# A signed link (the file JSON's content_url, thumbnail_url, events_url) stands for the Authorization
# header: the three query parameters together, a security scheme each (components.securitySchemes).
LINK_SCHEMES = {
    "linkUser": ("u", "signed link: the user it was made for"),
    "linkExpiry": ("exp", "signed link: expiry, unix time"),
    "linkSignature": (links.SIGNATURE, "signed link: HMAC-SHA256, base64url"),
}
LINK_PATHS = frozenset(f"/api/files/{{id}}/{purpose}" for purpose in links.PURPOSES)
# Path parameters: what service.validation.path_id and path_int accept.
ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": NO_NUL}
ANY_ID = {"type": "string", "minLength": 1}
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "index": {"type": "integer", "minimum": 0, "maximum": uploads.MAX_CHUNK_INDEX},
    "name": {"type": "string", "minLength": 1},
}
BYTES = {"schema": {"type": "string", "format": "binary"}}
RAW_CHUNK = {"application/octet-stream": BYTES}
RUFH_HEADERS: tuple[Param, ...] = (
    ("Upload-Draft-Interop-Version", {"enum": ["7", "8"]}, "the IETF draft's interop version: 8 (or 7)"),
    ("Upload-Complete", {"enum": ["?0", "?1"]}, "the draft: ?1 when this request ends the upload, else ?0"),
    ("Content-Digest", "string", "RFC 9530 sha-256 or sha-512 of this request's content"),
    ("Repr-Digest", "string", "RFC 9530 sha-256 of the whole file (creation), checked on assembly"),
    ("Content-Disposition", "string", "the draft's creation: the file's name (RFC 6266)"),
)
UPLOAD_HEADERS = TUS_HEADERS + RUFH_HEADERS
ANY_BODY = {"application/offset+octet-stream": BYTES, "*/*": {"schema": {}}}  # the draft's: any content
CREATED = {
    201: "Location of the new upload (the draft: Upload-Complete, Upload-Limit, and the file's JSON once complete)"
}
CREATE_ERRORS = (400, 404, 408, 409, 412, 413, 415, 422, 423, 429, 460, 503, 507)
OPTIONS_ANSWER = "Tus-Version, Tus-Extension, Tus-Max-Size; Accept-Patch and Upload-Limit for the draft"
TUS_OPTIONS = op("Capabilities of tus and the draft", "tus", {204: OPTIONS_ANSWER})
TUS_CREATION = op(  # at /api/tus and /api/tus/
    "Creation (tus, or the draft's with Upload-Complete)",
    "tus",
    CREATED,
    headers=UPLOAD_HEADERS,
    body=ANY_BODY,
    body_required=False,  # creation-with-upload and the draft's may carry the first bytes
    errors=CREATE_ERRORS,
)

NUMBER = {"type": "number"}


def _key(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


# What the worker records of a file (service/media/), null until it is processed. Keys are absent when
# the bytes do not tell; the kind of the file (its `type`) says which of them to expect.
FILE_METADATA: dict[str, Any] = {
    "type": "object",
    "properties": {
        # every processed file
        "sha256": _key(STRING, "hex SHA-256 of the bytes"),
        "size": _key(INTEGER, "bytes"),
        "mimetype": _key(STRING, "the type sniffed from the bytes (as the file's mimetype)"),
        "claimed_mimetype": _key(STRING, "the type the client declared: only a hint"),
        "thumbnail": _key(
            {"type": "object", "properties": {"width": INTEGER, "height": INTEGER, "mimetype": STRING}},
            "the thumbnail made (longest side 320 px), when one was",
        ),
        # IMAGE
        "width": _key(INTEGER, "IMAGE, VIDEO: pixels as displayed (EXIF orientation or rotation applied)"),
        "height": _key(INTEGER, "IMAGE, VIDEO: pixels as displayed"),
        "format": _key(STRING, "IMAGE: Pillow's name of the format (JPEG, PNG, HEIF, AVIF, GIF, WEBP ...)"),
        "orientation": _key({"type": "integer", "minimum": 1, "maximum": 8}, "IMAGE: the EXIF orientation, when not 1"),
        "animated": _key(BOOLEAN, "IMAGE: more than one frame (GIF, WebP, APNG)"),
        "frames": _key(INTEGER, "IMAGE: number of frames (the thumbnail is of the first)"),
        "camera": _key(
            {"type": "object", "properties": {"make": STRING, "model": STRING}},
            "IMAGE: from EXIF; no other EXIF (GPS, serial numbers) is kept",
        ),
        "taken_at": _key(STRING, "IMAGE: capture time from EXIF, ISO 8601 (with the offset when the camera wrote one)"),
        # DOCUMENT (PDF)
        "page_count": _key(INTEGER, "PDF: pages (unknown for an encrypted PDF that needs a password)"),
        "title": _key(STRING, "PDF: the document's title"),
        "author": _key(STRING, "PDF: the document's author"),
        "encrypted": _key(BOOLEAN, "PDF: encrypted; then nothing is rendered and there is no thumbnail"),
        # VIDEO
        "duration": _key(NUMBER, "VIDEO, AUDIO: seconds"),
        "container": _key(STRING, "VIDEO: FFmpeg's name of the container (mp4, webm, matroska, mov, avi ...)"),
        "video_codec": _key(STRING, "VIDEO: h264, hevc, vp9, av1 ..."),
        "audio_codec": _key(STRING, "VIDEO: of the first audio track, when there is one"),
        "fps": _key(NUMBER, "VIDEO: average frame rate"),
        "bit_rate": _key(INTEGER, "VIDEO, AUDIO: bits per second"),
        # AUDIO
        "codec": _key(STRING, "AUDIO: mp3, aac, flac, opus, vorbis, pcm_s16le ..."),
        "sample_rate": _key(INTEGER, "AUDIO: samples per second"),
        "channels": _key(INTEGER, "AUDIO: channels"),
        "tags": _key(
            {"type": "object", "properties": {"title": STRING, "artist": STRING, "album": STRING}},
            "AUDIO: from ID3, Vorbis comments or MP4 atoms; the cover art becomes the thumbnail",
        ),
    },
}

# (METHOD, path) -> operation; one block per area, like the route table.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    # health
    ("GET", "/healthz"): op("The process is alive", "ops", {200: OBJECT}),
    ("GET", "/readyz"): op("The database answers", "ops", {200: OBJECT}, errors=(503,)),
    # accounts and posts
    ("POST", "/api/auth/register"): op(
        "Create an account and a session",
        "auth",
        {201: _ref("Session")},
        body=_json_body(auth.NEW_EMAIL, auth.NEW_PASSWORD, auth.NAME, auth.DEVICE),
        errors=(409,),
    ),
    ("POST", "/api/auth/login"): op(
        "Log in",
        "auth",
        {200: _ref("Session")},
        body=_json_body(auth.EMAIL, auth.PASSWORD, auth.DEVICE),
        errors=(401, 429),
    ),
    ("POST", "/api/auth/refresh"): op(
        "Rotate the refresh token",
        "auth",
        {200: _ref("Session")},
        body=_json_body(auth.REFRESH),
        errors=(401,),
    ),
    ("POST", "/api/auth/logout"): op("End the session", "auth", {204: "logged out"}),
    ("POST", "/api/auth/password"): op(
        "Change the password; ends the other sessions",
        "auth",
        {200: OBJECT},
        body=_json_body(auth.CURRENT_PASSWORD, auth.CHANGED_PASSWORD),
        errors=(403,),
    ),
    ("GET", "/api/auth/sessions"): op(
        "The caller's sessions (devices), the current one marked", "auth", {200: OBJECT}, errors=(403,)
    ),
    ("DELETE", "/api/auth/sessions/{id}"): op(
        "End one of the caller's sessions", "auth", {204: "ended"}, errors=(403, 404, 422)
    ),
    ("POST", "/api/tokens"): op(
        "Mint an API token (the secret is shown once)",
        "tokens",
        {201: _ref("ApiToken")},
        body=_json_body(tokens.NAME, tokens.SCOPES, tokens.EXPIRES_IN),
        errors=(403,),
    ),
    ("GET", "/api/tokens"): op("The caller's API tokens (never their secrets)", "tokens", {200: OBJECT}),
    ("DELETE", "/api/tokens/{id}"): op("Revoke an API token", "tokens", {204: "revoked"}, errors=(404, 422)),
    ("POST", "/api/webhooks"): op(
        "Register a webhook for file events (the secret is shown once)",
        "webhooks",
        {201: OBJECT},
        body=_json_body(webhooks.URL, webhooks.EVENTS, webhooks.DESCRIPTION, webhooks.ALL_USERS),
        errors=(403,),
    ),
    ("GET", "/api/webhooks"): op("The caller's webhooks", "webhooks", {200: OBJECT}),
    ("DELETE", "/api/webhooks/{id}"): op(
        "Delete a webhook and its deliveries", "webhooks", {204: "deleted"}, errors=(404, 422)
    ),
    ("GET", "/api/webhooks/{id}/deliveries"): op(
        "A webhook's deliveries, newest first: status codes and times",
        "webhooks",
        {200: OBJECT},
        query=PAGE,
        errors=(404, 422),
    ),
    ("GET", "/api/users/me"): op("The caller, with posts and files", "users", {200: _ref("User")}),
    ("GET", "/api/users"): op("List users", "users", {200: OBJECT}, query=PAGE, admin=True, errors=(422,)),
    ("GET", "/api/users/{id}"): op("One user", "users", {200: _ref("User")}, admin=True, errors=(404,)),
    ("PATCH", "/api/users/{id}"): op(
        "Change a user",
        "users",
        {200: _ref("User")},
        admin=True,
        body=_json_body(*users.PATCH_FIELDS),
        errors=(404, 409),
    ),
    ("DELETE", "/api/users/{id}"): op("Delete a user", "users", {204: "deleted"}, admin=True, errors=(404, 409)),
    ("DELETE", "/api/users/{id}/sessions"): op(
        "End all of a user's sessions", "users", {200: OBJECT}, admin=True, errors=(404, 422)
    ),
    ("GET", "/api/admin/stats/users"): op("User counts", "admin", {200: OBJECT}, admin=True),
    ("POST", "/api/posts"): op(
        "Create a post, attaching the caller's files",
        "posts",
        {201: _ref("Post")},
        body=_json_body(posts.TITLE, posts.CONTENT, posts.PUBLISHED, posts.FILE_IDS),
    ),
    ("GET", "/api/posts"): op(
        "List posts",
        "posts",
        {200: OBJECT},
        query=(
            ("author_id", {"type": "string", "maxLength": MAX_ID_LENGTH, "pattern": NO_NUL}, "only this author's"),
            *PAGE,
        ),
        errors=(422,),
    ),
    ("GET", "/api/posts/recent"): op(
        "Recent published posts",
        "posts",
        {200: {"type": "array", "items": OBJECT}},
        query=(
            (
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_QUERY_INT},
                f"how many: {posts.RECENT_DEFAULT} by default, above {posts.RECENT_MAX} counted as {posts.RECENT_MAX}",
            ),
        ),
        errors=(422,),
    ),
    ("GET", "/api/posts/{id}"): op("One post", "posts", {200: _ref("Post")}, errors=(404,)),
    ("PATCH", "/api/posts/{id}"): op(
        "Change a post (author or admin)",
        "posts",
        {200: _ref("Post")},
        body=_json_body(*posts.PATCH_FIELDS),
        errors=(404,),
    ),
    ("DELETE", "/api/posts/{id}"): op("Delete a post (author or admin)", "posts", {204: "deleted"}, errors=(404,)),
    # uploads and files
    ("GET", "/api/uploads/{id}"): op(
        "An upload's state: received and missing chunks", "uploads", {200: _ref("Upload")}, errors=(404, 410)
    ),
    ("PUT", "/api/uploads/{id}/chunks/{index}"): op(
        "Store one chunk (201 stored, 200 identical repeat)",
        "uploads",
        {201: OBJECT, 200: OBJECT},
        body=RAW_CHUNK,
        headers=(
            ("Content-SHA256", {"type": "string", "pattern": uploads.SHA256_HEX_PATTERN}, "hex SHA-256 of the body"),
        ),
        errors=(400, 404, 408, 409, 410, 413, 422, 429, 503, 507),
    ),
    ("POST", "/api/uploads/{id}/complete"): op(
        "All chunks are there: process the file (optionally checked against the whole file's sha256)",
        "uploads",
        {202: OBJECT},
        body=_json_body(uploads.SHA256),
        body_required=False,
        errors=(404, 409, 410),
    ),
    ("DELETE", "/api/uploads/{id}"): op("Abort an upload", "uploads", {204: "aborted"}, errors=(404, 409)),
    ("GET", "/api/files"): op(
        "List the caller's files",
        "files",
        {200: OBJECT},
        query=(
            ("status", {"enum": list(FileStatus)}, "only files of this status (any case)"),
            ("type", {"enum": list(FileType)}, "only files of this kind (any case)"),
            *PAGE,
        ),
        errors=(422,),
    ),
    ("GET", "/api/files/{id}"): op(
        "A file's status and metadata (ETag; ?wait= long-poll)",
        "files",
        {200: _ref("File"), 304: "not modified"},
        query=(
            (
                "wait",
                {"type": "integer", "minimum": 0, "maximum": files.MAX_WAIT},
                "whole seconds to wait for a status change (0: answer at once)",
            ),
        ),
        headers=(("If-None-Match", "string", "the ETag already held"),),
        errors=(404, 422),
    ),
    ("GET", "/api/files/{id}/events"): op(
        "Status changes as server-sent events",
        "files",
        {200: "text/event-stream of `status` events"},
        errors=(404, 422),
    ),
    ("GET", "/api/files/{id}/content"): op(
        "The file's bytes (Range supported)",
        "files",
        {
            200: "the bytes",
            206: "a range of them",
            302: "DOWNLOAD_REDIRECT: to a presigned URL of the store (5 minutes)",
        },
        query=(("disposition", {"enum": ["attachment", "inline"]}, "attachment (default), or inline (images only)"),),
        headers=(("Range", "string", "bytes=start-end"), ("If-Range", "string", "an HTTP date")),
        errors=(403, 404, 409, 416, 422, 503),
    ),
    ("GET", "/api/files/{id}/thumbnail"): op(
        "The file's thumbnail: an image, a PDF's first page, a video's poster frame or an audio file's cover art",
        "files",
        {200: "WebP or JPEG", 302: "DOWNLOAD_REDIRECT: to a presigned URL"},
        errors=(404, 409, 422, 503),
    ),
    ("DELETE", "/api/files/{id}"): op("Delete a file and its blobs", "files", {204: "deleted"}, errors=(404,)),
    # tus 1.0 (core, creation, creation-with-upload, creation-defer-length, expiration, checksum,
    # termination, concatenation) and, on the same paths, the IETF Resumable Uploads draft (interop
    # version 8, and 7), told apart by their fields: Tus-Resumable, or Upload-Draft-Interop-Version /
    # Upload-Complete. The draft's creation sends a 104 (Upload Resumption Supported) with the Location first.
    ("OPTIONS", "/api/tus"): TUS_OPTIONS,
    ("POST", "/api/tus"): TUS_CREATION,
    ("OPTIONS", "/api/tus/"): TUS_OPTIONS,
    ("POST", "/api/tus/"): TUS_CREATION,
    ("HEAD", "/api/tus/{upload_id}"): op(
        "Offset retrieval",
        "tus",
        {
            200: "tus: Upload-Offset, Upload-Length or Upload-Defer-Length, Upload-Metadata, Upload-Expires",
            204: "the draft: Upload-Offset, Upload-Complete, Upload-Length, Upload-Limit, Repr-Digest once processed",
        },
        headers=UPLOAD_HEADERS,
        errors=(400, 404, 410, 412),
    ),
    ("PATCH", "/api/tus/{upload_id}"): op(
        "Append",
        "tus",
        {
            204: "the new Upload-Offset (the draft: with Upload-Complete: ?0)",
            200: _ref("File") | {"description": "the draft, Upload-Complete: ?1: the file, now PROCESSING"},
        },
        headers=UPLOAD_HEADERS,
        body={"application/offset+octet-stream": BYTES, "application/partial-upload": BYTES},
        body_required=False,  # the draft ends an upload with an empty Upload-Complete: ?1 append
        errors=(400, 403, 404, 408, 409, 410, 412, 413, 415, 422, 423, 429, 460, 503, 507),
    ),
    ("DELETE", "/api/tus/{upload_id}"): op(
        "Termination / cancellation", "tus", {204: "terminated"}, headers=UPLOAD_HEADERS, errors=(400, 404, 412, 423)
    ),
    ("OPTIONS", "/api/tus/{upload_id}"): TUS_OPTIONS,
    # admin and ops
    ("GET", "/api/admin/stats/files"): op(
        "Files by type and status", "admin", {200: {"type": "array", "items": _ref("FileStats")}}, admin=True
    ),
    ("GET", "/api/admin/stats/uploads/daily"): op(
        "Uploads per UTC day, zero-filled, oldest first",
        "admin",
        {200: {"type": "array", "items": _ref("DailyUploads")}},
        query=(
            (
                "days",
                {"type": "integer", "minimum": 1, "maximum": DAILY_DAYS_MAX},
                f"how many UTC days, ending today (default {DAILY_DAYS_DEFAULT})",
            ),
        ),
        admin=True,
        errors=(422,),
    ),
    ("GET", "/api/admin/stats/queue"): op(
        "Processing queue depth: files waiting for a worker, files being processed, files held back",
        "admin",
        {200: _ref("QueueDepth")},
        admin=True,
    ),
    ("GET", "/api/admin/db"): op("Database health", "admin", {200: _ref("DatabaseHealth")}, admin=True),
    ("GET", "/metrics"): op(
        "Prometheus metrics (no token: firewall it)",
        "ops",
        {200: "Prometheus text format 0.0.4, or OpenMetrics when asked"},
    ),
    ("GET", "/openapi.json"): op("This document", "ops", {200: OBJECT}),
    # the web UI (HTML; its /static/ files are not operations and are left out)
    ("GET", "/"): op("The web UI: sign in, upload, my files (text/html)", "web", {200: "the HTML page"}),
    ("GET", "/admin"): op(
        "The admin dashboard (text/html; its data needs an admin's token)", "web", {200: "the HTML page"}
    ),
    ("GET", "/vendor/{name}"): op(
        "A browser library installed by npm (service/web/package.json)",
        "web",
        {200: "the JavaScript file"},
        errors=(404,),
    ),
}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": STRING,
            "title": STRING,
            "status": INTEGER,
            "detail": STRING,
            "code": {"type": "string", "pattern": "^[A-Z0-9_]+$"},
        },
    },
    "User": {
        "type": "object",
        "properties": {
            "id": STRING,
            "email": STRING,
            "name": {"type": ["string", "null"]},
            "role": {"enum": ["USER", "ADMIN"]},
            "is_active": BOOLEAN,
            "created_at": STRING,
            "updated_at": STRING,
        },
    },
    "Session": {
        "type": "object",
        "properties": {
            "access_token": STRING,
            "refresh_token": STRING,
            "token_type": {"const": "Bearer"},
            "expires_in": INTEGER,
            "session_id": STRING,
            "user": _ref("User"),
        },
    },
    "ApiToken": {
        "type": "object",
        "properties": {
            "id": STRING,
            "name": STRING,
            "token": STRING,
            "scopes": {"type": "array", "items": STRING},
            "expires_at": {"type": ["string", "null"]},
            "last_used_at": {"type": ["string", "null"]},
        },
    },
    "Post": {
        "type": "object",
        "properties": {
            "id": STRING,
            "title": STRING,
            "content": {"type": ["string", "null"]},
            "published": BOOLEAN,
            "author_id": STRING,
        },
    },
    "Upload": {
        "type": "object",
        "properties": {
            "id": STRING,
            "status": STRING,
            "size": INTEGER,
            "chunk_size": INTEGER,
            "total_chunks": INTEGER,
            "bytes_received": INTEGER,
            "expires_at": {"type": ["string", "null"]},
            "received": {"type": "array", "items": INTEGER},
            "missing": {"type": "array", "items": INTEGER},
            "error": {"type": ["string", "null"]},
        },
    },
    "File": {
        "type": "object",
        "properties": {
            "id": STRING,
            "status": STRING,
            "type": STRING,
            "mimetype": STRING,
            "size": INTEGER,
            "original_name": STRING,
            "url": {"type": ["string", "null"]},
            "thumbnail": {"type": ["string", "null"]},
            "metadata": {"oneOf": [_ref("FileMetadata"), {"type": "null"}]},
            "content_url": {"type": ["string", "null"]},
            "thumbnail_url": {"type": ["string", "null"]},
            "events_url": STRING,
            "error": {"type": ["string", "null"]},
        },
    },
    "FileMetadata": FILE_METADATA,
    "FileStats": {
        "type": "object",
        "properties": {
            "type": STRING,
            "status": STRING,
            "count": INTEGER,
            "total_size": INTEGER,
            "average_size": INTEGER,
        },
    },
    "DailyUploads": {
        "type": "object",
        "properties": {"date": {"type": "string", "format": "date"}, "uploads": INTEGER, "total_size": INTEGER},
    },
    "QueueDepth": {
        "type": "object",
        "required": ["waiting", "claimed", "blocked"],
        "properties": {
            "waiting": INTEGER,
            "claimed": INTEGER,
            "blocked": _key(INTEGER, "of these, files their environment holds back (full disk, missing store)"),
        },
    },
    "DatabaseHealth": {
        "type": "object",
        "properties": {
            "connections": OBJECT,
            "pool": OBJECT,
            "database": OBJECT,
            "tables": {
                "type": "array",
                "items": {
                    "type": "object",
                    "description": "per table: sizes, live and dead rows (and of its TOAST table), "
                    "reclaimable_bytes (estimated space held by dead rows, reused after VACUUM) and last_vacuum",
                    "required": [
                        "name",
                        "rows",
                        "dead_rows",
                        "toast_rows",
                        "toast_dead_rows",
                        "total_bytes",
                        "table_bytes",
                        "index_bytes",
                        "reclaimable_bytes",
                        "last_vacuum",
                    ],
                    "properties": {
                        "reclaimable_bytes": {"type": "integer", "minimum": 0},
                        "last_vacuum": {"type": ["string", "null"]},
                    },
                },
            },
            "indexes": {"type": "array", "items": OBJECT},
            "pg_stat_statements": {"type": ["array", "null"], "items": OBJECT},
            "pg_stat_statements_reason": {"type": ["string", "null"]},
        },
    },
}

_PARAM = re.compile(r"\{([^}:]+)")


def document(router: web.UrlDispatcher, settings: Settings) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    described = {**OPERATIONS, **_of_settings(settings)}
    for method, path in sorted(served_operations(router)):
        operation = described.get((method, path))
        if operation is None and method == "HEAD" and ("GET", path) in described:  # aiohttp's allow_head
            get = described[("GET", path)]
            operation = {**get, "summary": f"Headers of: {get['summary']}"}
        if operation is None:
            continue  # tests/test_openapi.py fails on this route
        entry = paths.setdefault(path, {})
        operation = dict(operation)
        # Every /api route needs a caller but the public ones and OPTIONS (CORS preflights, tus discovery).
        if path.startswith("/api/") and path not in PUBLIC_PATHS and method != "OPTIONS":
            operation["security"] = [{"bearerAuth": []}]
            if path in LINK_PATHS and method in ("GET", "HEAD"):
                operation["security"].append({scheme: [] for scheme in LINK_SCHEMES})
            # Any route may meet a token whose scopes are too narrow (INSUFFICIENT_SCOPE).
            operation["responses"] = {
                **operation["responses"],
                "401": {"$ref": "#/components/responses/Problem401"},
                "403": {"$ref": "#/components/responses/Problem403"},
            }
        names = _PARAM.findall(path)
        if names:
            # OPTIONS answers capabilities without reading the id
            kinds = {n: ANY_ID if method == "OPTIONS" else PATH_PARAMETERS.get(n, ID) for n in names}
            operation["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": kinds[n]} for n in names
            ] + operation.get("parameters", [])
            if method != "OPTIONS" and any(n not in PATH_PARAMETERS or n == "index" for n in names):  # 422
                operation["responses"] = {
                    "422": {"$ref": "#/components/responses/Problem422"},
                    **operation["responses"],
                }
        entry[method.lower()] = operation
    statuses = {int(s) for p in paths.values() for o in p.values() for s in o["responses"] if s.isdigit()} | {401, 403}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chunkd",
            "version": __version__,
            "description": "Resumable chunked file uploads on PostgreSQL. Errors are application/problem+json.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a session's access token (JWT) or an API token (ckd_...)",
                },
                **{
                    scheme: {"type": "apiKey", "in": "query", "name": name, "description": description}
                    for scheme, (name, description) in LINK_SCHEMES.items()
                },
            },
            "schemas": SCHEMAS,
            "responses": {
                f"Problem{s}": {
                    "description": f"problem {s}",
                    "content": {"application/problem+json": {"schema": PROBLEM}},
                }
                for s in sorted(statuses)
                if s >= 400
            },
        },
    }


def _of_settings(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """The operations whose bounds are settings of this server."""
    body = _json_body(*uploads.upload_fields(settings))
    body[JSON]["schema"]["properties"]["size"]["maximum"] = settings.max_upload_size  # above: 413
    return {
        ("POST", "/api/uploads"): op(
            "Start an upload",
            "uploads",
            {201: _ref("Upload")},
            body=body,
            errors=(404, 413),
        ),
    }


def served_operations(router: web.UrlDispatcher) -> set[tuple[str, str]]:
    """(METHOD, path) of every route; a `*` route stands for the methods OPERATIONS gives its path."""
    found = set()
    for route in router.routes():
        if route.resource is None or isinstance(route.resource, web.StaticResource):
            continue
        path = route.resource.canonical
        if route.method == "*":
            found |= {(m, p) for m, p in OPERATIONS if p == path} or {("*", path)}
        else:
            found.add((route.method, path))
    return found
