"""The application factory: state, resources in cleanup_ctx, middlewares, routes."""

from __future__ import annotations

from aiohttp import web

from service import db, events, storage, webui, worker
from service.auth import Passwords, auth_middleware
from service.bodies import BodyMemory
from service.config import Settings
from service.cors import add_cors_headers, cors_middleware
from service.keys import body_memory_key, passwords_key, settings_key
from service.middlewares import access_middleware, log_parser_refusals, problem_middleware
from service.routes import ROUTES
from service.tus import tus_middleware
from service.tus_locks import tus_locks_ctx

# Chunk and tus bodies are read piece by piece (never by request.read(), which this limits); JSON
# bodies above it are refused with 413.
MAX_JSON_BODY = 1024 * 1024
# How much of a body may wait in the socket reader before it stops reading (aiohttp's default is
# 64 KiB): a multi-MiB chunk then arrives in a few large pieces, not hundreds of pause/resume rounds.
READ_BUFFER = 1024 * 1024


def create_app(settings: Settings, *, with_worker: bool = False) -> web.Application:
    """with_worker: run a processing worker in this process too (`chunkd serve` does unless --no-worker)."""
    # access (log + metrics) outermost: it sees every answer, preflights too; then cors (preflights need no
    # route, token or tus version); tus outside problem so that its Tus-Resumable header lands on errors too.
    middlewares = [access_middleware, cors_middleware, tus_middleware, problem_middleware, auth_middleware]
    app = web.Application(
        middlewares=middlewares, client_max_size=MAX_JSON_BODY, handler_args={"read_bufsize": READ_BUFFER}
    )
    app[settings_key] = settings
    app[passwords_key] = Passwords(settings.argon2_concurrency)
    log_parser_refusals()
    app[body_memory_key] = BodyMemory.from_settings(settings)
    app.cleanup_ctx.append(db.pool_ctx)
    app.cleanup_ctx.append(events.file_events_ctx)
    app.cleanup_ctx.append(tus_locks_ctx)
    app.cleanup_ctx.append(storage.storage_ctx)
    app.cleanup_ctx.append(webui.web_pages_ctx)
    if with_worker:
        app.cleanup_ctx.append(worker.worker_ctx)
    app.on_response_prepare.append(add_cors_headers)
    app.on_response_prepare.append(webui.add_web_headers)
    app.router.add_routes(ROUTES)
    return app
