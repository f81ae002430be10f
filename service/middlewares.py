"""Every response passes here: errors become problem+json, every request is logged and timed."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from service import metrics
from service.db import DATABASE_DOWN, unavailable
from service.errors import (
    ApiError,
    BadRequest,
    DatabaseUnavailable,
    MethodNotAllowed,
    StorageUnavailable,
    from_database_refusal,
    from_http_exception,
    problem_response,
)
from service.keys import settings_key, slow_by_design_key
from service.storage import base as storage

log = logging.getLogger("service.http")


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return problem_response(e)
    except web.HTTPMethodNotAllowed as e:
        allowed = sorted(await _own_methods(request) or e.allowed_methods)
        return problem_response(
            MethodNotAllowed(
                f"{request.method} is not allowed here; allowed: {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
        )
    except web.HTTPException as e:
        if e.status < 400:
            raise  # 304, redirects: not errors
        return problem_response(from_http_exception(e))
    except DATABASE_DOWN as e:
        if not unavailable(e, request.app[settings_key]):  # a loss is logged once; a pool timeout each time
            log.warning(
                "database did not answer in time: %r", e, extra={"action": "database_unavailable", "path": request.path}
            )
        return problem_response(
            DatabaseUnavailable("the database cannot be reached; try again shortly", headers={"Retry-After": "1"})
        )
    except asyncpg.InsufficientResourcesError as e:  # a full disk, say: 507
        log.warning("database cannot write: %s", e, extra={"action": "database_full", "path": request.path})
        return problem_response(from_database_refusal(e))
    except storage.StorageUnavailable as e:
        log.warning("storage unavailable: %s", e, extra={"action": "storage_unavailable", "path": request.path})
        return problem_response(
            StorageUnavailable("blob storage cannot be reached; try again shortly", headers={"Retry-After": "5"})
        )
    except asyncio.CancelledError:
        raise  # the client went away and aiohttp cancelled the handler: nothing to answer
    except ConnectionResetError:
        # The client went away while we read its body or wrote the answer: nobody will read this one.
        # Answered (not raised) so that aiohttp does not log it as an error with a traceback.
        return web.Response(status=CLIENT_CLOSED, reason="Client Closed Request")
    except (web.RequestPayloadError, HttpProcessingError) as e:
        # A body aiohttp cannot decode (a bad Content-Encoding stream, broken chunked framing), met
        # while a handler reads it: the client's fault, and nothing was written from it.
        cause = e.__cause__ or e
        message = getattr(cause, "message", "") or str(cause)
        response = problem_response(BadRequest(f"the request body could not be read: {message.strip()[:200]}"))
        response.force_close()  # the rest of the stream cannot be framed: this connection is done
        return response
    except Exception:
        log.exception("unhandled error", extra={"action": "unhandled_error", "path": request.path})
        return problem_response(ApiError())


async def _own_methods(request: web.Request) -> set[str]:
    """The methods of the route the path belongs to. aiohttp's 405 lists those of every route whose
    pattern matches (GET /api/posts/recent's Allow had PATCH and DELETE of /api/posts/{id}); the path's
    own route is the first that matches it, as it is for an allowed method."""
    resources = request.app.router.resources()
    for resource in resources:
        _, allowed = await resource.resolve(request)
        if allowed:  # the routes of one path may be resources of their own (registered apart)
            return {m for r in resources if r.canonical == resource.canonical for m in (await r.resolve(request))[1]}
    return set()


# Status of a request whose client went away before an answer (nginx's convention).
CLIENT_CLOSED = 499
# Any token is a method to HTTP: unknown ones share one label value, so clients cannot mint series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request timed once, outermost (preflights included): logged, with the seed's slow-request
    warning, and counted by route pattern (/api/files/{id}, never the raw path: bounded label values)."""
    started = time.perf_counter()
    status = CLIENT_CLOSED  # stays so only when the handler was cancelled: problem_middleware answers the rest
    try:
        response = await handler(request)
        status = CLIENT_CLOSED if _client_gone(request) else response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        seconds = time.perf_counter() - started
        _log_request(request, status, seconds * 1000)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        metrics.REQUESTS.labels(route, method, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(route, method).observe(seconds)


def _client_gone(request: web.Request) -> bool:
    """The connection closed before the answer could be sent (aiohttp drops the transport on loss)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _log_request(request: web.Request, status: int, ms: float) -> None:
    fields = {"action": "request", "method": request.method, "path": request.path, "status": status, "ms": round(ms, 1)}
    slow = ms > request.app[settings_key].slow_request_ms and not request.get(slow_by_design_key)
    if slow and status != CLIENT_CLOSED:  # a client that left is one INFO line, however long it took
        log.warning(
            "slow request: %s %s took %.0f ms",
            request.method,
            request.path,
            ms,
            extra={**fields, "action": "slow_request"},
        )
    else:
        log.info("%s %s %s %.1f ms", request.method, request.path, status, ms, extra=fields)


class ParserRefusals(logging.Filter):
    """A request aiohttp's HTTP parser refuses (a NUL in a header, a bad request line, a header too
    long) never reaches a handler: aiohttp answers it itself and logs it with `logger.exception`. That
    is the client's fault, so anyone could flood the log with tracebacks: the record becomes one WARNING
    line without one, and the request is counted in chunkd_http_requests_total as route `unmatched`."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            status = error.code if 400 <= error.code < 600 else 400
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "refused a request the HTTP parser could not read: %s",
                (str(error.message)[:200],),
                None,
                None,
            )
            record.__dict__.update(action="request_refused", status=status)
            metrics.REQUESTS.labels("unmatched", "OTHER", str(status)).inc()
        return True


def log_parser_refusals() -> None:
    """Installs ParserRefusals on aiohttp's server logger, once per process."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserRefusals) for f in server.filters):
        server.addFilter(ParserRefusals())
