"""CORS for browser clients (Uppy, tus-js-client in a page) on the whole /api, from CORS_ORIGINS.

Preflights are answered by the middleware before routing matters; the headers of actual responses
are added just before they are sent (on_response_prepare), so error responses and streamed ones
(SSE, file content) carry them too. The allowed origin is echoed, never `*`, which also keeps
credentialed requests possible."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from service.keys import settings_key

ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = ", ".join(
    (
        "Authorization",
        "Content-Type",
        "Content-SHA256",
        "If-None-Match",
        "Range",
        "X-Requested-With",
        "X-HTTP-Method-Override",
        "Tus-Resumable",
        "Upload-Length",
        "Upload-Offset",
        "Upload-Metadata",
        "Upload-Defer-Length",
        "Upload-Concat",
        "Upload-Checksum",
        # the IETF resumable-upload draft and its digests (RFC 9530)
        "Upload-Complete",
        "Upload-Draft-Interop-Version",
        "Content-Digest",
        "Repr-Digest",
        "Want-Repr-Digest",
        "Content-Disposition",
    )
)
EXPOSE_HEADERS = ", ".join(
    (
        "Location",
        "ETag",
        "Retry-After",
        "Content-Disposition",
        "Content-Range",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Metadata",
        "Upload-Defer-Length",
        "Upload-Concat",
        "Upload-Expires",
        "Tus-Version",
        "Tus-Resumable",
        "Tus-Max-Size",
        "Tus-Extension",
        "Tus-Checksum-Algorithm",
        "Upload-Complete",
        "Upload-Limit",
        "Upload-Draft-Interop-Version",
        "Repr-Digest",
        "Want-Content-Digest",
        "Want-Repr-Digest",
        "Accept-Patch",
        "Content-Location",
    )
)
log = logging.getLogger(__name__)

MAX_AGE = "86400"  # browsers may cache a preflight for a day


def allowed_origin(request: web.Request) -> str | None:
    """The request's Origin when CORS_ORIGINS admits it (exactly, or by `*`)."""
    origin = request.headers.get("Origin")
    if not origin or not request.path.startswith("/api/"):
        return None
    origins = request.app[settings_key].cors_origins
    return origin if "*" in origins or origin in origins else None


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (
        request.method != "OPTIONS"
        or "Access-Control-Request-Method" not in request.headers
        or not request.path.startswith("/api/")
    ):
        return await handler(request)
    response = web.Response(status=204)
    if not allowed_origin(request):  # no CORS headers: the browser blocks the call
        log.warning(
            "CORS preflight refused: origin %s is not in CORS_ORIGINS",
            request.headers.get("Origin"),
            extra={"action": "cors_refused", "origin": request.headers.get("Origin"), "path": request.path},
        )
    else:
        response.headers.update(
            {
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE,
            }
        )
    return response


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every /api response to an allowed origin says so."""
    if not request.path.startswith("/api/") or not request.app[settings_key].cors_origins:
        return
    response.headers.add("Vary", "Origin")  # the answer depends on the Origin: caches must know
    origin = allowed_origin(request)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
