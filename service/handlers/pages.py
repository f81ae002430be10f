"""The web UI's pages and the npm-installed browser libraries they load (see service/webui.py)."""

from __future__ import annotations

from aiohttp import web

from service.errors import NotFound
from service.keys import web_pages_key


async def get_index(request: web.Request) -> web.Response:
    return _page(request)


async def get_admin(request: web.Request) -> web.Response:
    return _page(request)


def _page(request: web.Request) -> web.Response:
    return web.Response(body=request.app[web_pages_key].html[request.path], content_type="text/html", charset="utf-8")


async def get_vendor_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    path = request.app[web_pages_key].vendor.get(name)
    if path is None:
        raise NotFound(f"{name} is not installed: run `make install` (npm ci in service/web/)")
    return web.FileResponse(path)
