"""The web UI served by chunkd itself: HTML pages from service/web/, their static files, and the browser
libraries npm installed into service/web/node_modules/ (never committed: service/web/package.json pins them).

Every asset URL a page names carries a hash of the file (`?v=`), so assets are cached for a year and a
new build is fetched at once; the pages themselves are revalidated on every load. The pages run on the
API's origin, so they need no CORS, and a strict Content-Security-Policy: no inline script or style."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from service.keys import web_pages_key

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_DIR = WEB_DIR / "static"
NODE_MODULES = WEB_DIR / "node_modules"
# Browser builds, by the name they are served under (/vendor/NAME). tus-js-client rather than Uppy: the
# page draws its own accessible list, so only the protocol client is needed (87 KB against Uppy's
# whole widget set), and its onBeforeRequest hook lets the page sign each PATCH with Upload-Checksum.
VENDOR = {"tus.min.js": "tus-js-client/dist/tus.min.js"}
PAGES = {"/": "index.html", "/admin": "admin.html"}
MISSING_VENDOR = (
    "The upload client is not installed: run <code>make install</code> (it runs "
    "<code>npm ci</code> in service/web/), then restart chunkd."
)

# Nothing leaves 'self': thumbnails, downloads and event streams are the API's signed links.
CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
VERSIONED = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_PLACEHOLDER = re.compile(r"\{\{\s*(vendor-notice|static|vendor)\s*:?\s*([\w.\-]*)\s*\}\}")


@dataclass(frozen=True)
class WebPages:
    html: dict[str, bytes]  # request path -> rendered page
    vendor: dict[str, Path]  # served name -> file in node_modules (present ones only)


def vendor_files() -> dict[str, Path]:
    return {name: NODE_MODULES / path for name, path in VENDOR.items() if (NODE_MODULES / path).is_file()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def render_pages(static: web.StaticResource) -> WebPages:
    """Fills each page's {{static:NAME}}, {{vendor:NAME}} and {{vendor-notice}} once, at start."""
    vendor = vendor_files()
    versions = {name: _digest(path) for name, path in vendor.items()}

    def fill(match: re.Match[str]) -> str:
        kind, name = match.groups()
        if kind == "static":
            return str(static.url_for(filename=name))  # append_version: /static/NAME?v=<hash>
        if kind == "vendor":
            return f"/vendor/{name}?v={versions[name]}" if name in versions else ""
        return "" if len(vendor) == len(VENDOR) else f'<p class="notice" id="vendor-missing">{MISSING_VENDOR}</p>'

    html = {}
    for path, page in PAGES.items():
        text = _PLACEHOLDER.sub(fill, (WEB_DIR / page).read_text())
        # A vendor script that is not installed leaves an empty src: drop the tag rather than load the page.
        html[path] = re.sub(r'<script src="" defer></script>\n?', "", text).encode()
    return WebPages(html, vendor)


async def web_pages_ctx(app: web.Application) -> AsyncIterator[None]:
    static = app.router["static"]
    assert isinstance(static, web.StaticResource)
    app[web_pages_key] = await asyncio.to_thread(render_pages, static)
    yield


def is_web_path(path: str) -> bool:
    return path in PAGES or path.startswith(("/static/", "/vendor/"))


async def add_web_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the UI's responses (errors too) get the CSP and their cache rule; /api is untouched."""
    if not is_web_path(request.path):
        return
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    versioned = "v" in request.query and response.status == 200 and request.path not in PAGES
    response.headers["Cache-Control"] = VERSIONED if versioned else REVALIDATE
