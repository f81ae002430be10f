"""The application factory: state, resources in cleanup_ctx, middlewares, routes."""
from __future__ import annotations

from aiohttp import web

from service import db
from service.auth import auth_middleware
from service.config import Settings
from service.keys import settings_key
from service.middlewares import log_middleware, metrics_middleware, problem_middleware
from service.routes import ROUTES

# Chunk bodies are streamed, never read whole; JSON bodies above this are refused with 413.
MAX_JSON_BODY = 1024 * 1024


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[metrics_middleware, log_middleware, problem_middleware, auth_middleware],
                          client_max_size=MAX_JSON_BODY)
    app[settings_key] = settings
    app.cleanup_ctx.append(db.pool_ctx)
    app.router.add_routes(ROUTES)
    return app
