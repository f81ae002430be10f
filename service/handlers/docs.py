"""GET /openapi.json: the API described, from this server's own route table (cheap: built per request)."""

from __future__ import annotations

from aiohttp import web

from service import openapi
from service.keys import settings_key


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi.document(request.app.router, request.app[settings_key]))
