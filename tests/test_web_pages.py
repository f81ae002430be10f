"""The web UI as HTTP sees it: pages at / and /admin, hashed asset URLs cached for good, a strict CSP,
the npm-installed upload client under /vendor/, and /api left as it was."""

from __future__ import annotations

import hashlib
import re

from service import webui


async def test_pages_are_served_with_a_strict_policy(client) -> None:
    for path in ("/", "/admin"):
        response = await client.get(path)
        assert response.status == 200 and response.content_type == "text/html"
        policy = response.headers["Content-Security-Policy"]
        assert policy.startswith("default-src 'self'") and "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["Cache-Control"] == "no-cache"  # a new deploy is seen at the next load
        html = await response.text()
        assert "<style" not in html and " style=" not in html and " on" + "click=" not in html
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script: the CSP would block it"


async def test_assets_have_versioned_urls_and_are_cached_for_a_year(client) -> None:
    html = await (await client.get("/")).text()
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {a.split("?")[0] for a in assets} >= {"/static/app.css", "/static/api.js", "/static/index.js"}
    for url in assets:
        path, _, version = url.partition("?v=")
        assert version, f"{url} is not versioned"
        response = await client.get(url)
        assert response.status == 200
        body = await response.read()
        assert body == (webui.STATIC_DIR / path.removeprefix("/static/")).read_bytes()
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    unversioned = await client.get("/static/app.css")
    assert unversioned.headers["Cache-Control"] == "no-cache"


async def test_the_upload_client_comes_from_npm(client) -> None:
    html = await (await client.get("/")).text()
    installed = webui.vendor_files()
    if installed:
        url = re.search(r'src="(/vendor/tus\.min\.js\?v=[0-9a-f]+)"', html).group(1)  # type: ignore[union-attr]
        response = await client.get(url)
        assert response.status == 200 and "javascript" in response.content_type
        assert hashlib.sha256(await response.read()).hexdigest()[:16] == url.rsplit("=", 1)[1]
        assert "vendor-missing" not in html
    else:  # the page says in one line how to get it
        assert 'id="vendor-missing"' in html and "make install" in html
    missing = await client.get("/vendor/not-a-library.js")
    assert missing.status == 404 and missing.content_type == "application/problem+json"
    assert (await missing.json())["detail"].startswith("not-a-library.js is not installed")


async def test_pages_without_the_upload_client_say_how_to_get_it(client, monkeypatch) -> None:
    monkeypatch.setattr(webui, "NODE_MODULES", webui.WEB_DIR / "not-installed")
    pages = webui.render_pages(client.server.app.router["static"])
    html = pages.html["/"].decode()
    assert pages.vendor == {} and "/vendor/" not in html
    line = re.search(r'<p class="notice" id="vendor-missing">(.*?)</p>', html).group(1)  # type: ignore[union-attr]
    assert "make install" in line and "npm ci" in line


async def test_api_is_untouched(client, user) -> None:
    listed, refused = await client.get("/api/files", headers=user.headers), await client.get("/api/files")
    assert listed.status == 200 and refused.status == 401
    for response in (listed, refused):
        assert "Content-Security-Policy" not in response.headers and "Referrer-Policy" not in response.headers
    assert (await client.get("/healthz")).headers.get("Content-Security-Policy") is None
