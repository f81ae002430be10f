"""The web UI in a real browser: Debian's Chromium driven by Playwright, against a real `chunkd serve`.

Sign in, upload through the file input, watch the list go COMPLETED live, reload in the middle of a
50 MiB upload and resume it, delete; the admin dashboard shows what /api/admin/stats/* says, and refuses
a regular user. Screenshots go to each test's tmp_path (under the run's pytest temporary directory).

Without Chromium, the playwright package or the npm-installed upload client these tests skip, with the
reason; with CHUNKD_REQUIRE_BROWSER=1 (set by .ci/run) they fail instead."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from service import webui
from tests.support import insert_file

CHROMIUM = os.environ.get("CHUNKD_CHROMIUM", "/usr/bin/chromium")
# Debian's browser, never one downloaded by Playwright (nothing can be downloaded here, nor on CI).
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 120_000  # 8 helpers share 2 cores here: generous, but bounded
MiB = 1024 * 1024


def missing_part() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: make install"
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        return f"{CHROMIUM} is missing: apt-get install --no-install-recommends chromium"
    if not webui.vendor_files():
        return "the upload client is not installed in service/web/node_modules: make install (runs npm ci)"
    return None


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    reason = missing_part()
    if reason:
        if os.environ.get("CHUNKD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (CHUNKD_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1100, "height": 900},
            accept_downloads=True,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()


async def open_page(browser: Any, url: str) -> Any:
    page = browser.pages[0] if browser.pages else await browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.problems = problems
    await page.goto(url)
    return page


async def sign_in(page: Any, email: str, password: str) -> None:
    form = page.locator("#signin-form")
    await form.get_by_label("Email").fill(email)
    await form.get_by_label("Password").fill(password)
    await form.get_by_label("Password").press("Enter")  # the keyboard submits the form
    await page.locator("#app").wait_for(state="visible")


async def call(server: Any, method: str, path: str, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
    """The API straight, beside the page: (status, JSON body or None)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, headers=headers, **kwargs) as response,
    ):
        return response.status, (await response.json() if response.content_type.endswith("json") else None)


async def api(server: Any, token: str, path: str) -> Any:
    status, body = await call(server, "GET", path, token)
    assert status == 200, body
    return body


def jpeg(path: Path) -> Path:
    image = Image.new("RGB", (640, 480))
    image.putdata([(x % 256, y % 256, (x * y) % 256) for y in range(480) for x in range(640)])
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    path.write_bytes(buffer.getvalue())
    return path


async def test_sign_in_upload_two_files_see_them_completed_and_delete_one(
    browser, chunkd, make_user, conn, tmp_path
) -> None:
    server = chunkd("serve")
    user = await make_user(email="ada@example.com")  # this test's own database: the README's screenshot
    page = await open_page(browser, server.url + "/")
    await page.get_by_role("heading", name="Sign in").wait_for()
    await sign_in(page, user.email, user.password)
    await page.get_by_role("heading", name="My files").wait_for()

    photo = jpeg(tmp_path / "photo.jpg")
    notes = tmp_path / "notes.txt"
    notes.write_text("chunkd notes\n" * 5000)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url.removeprefix(server.url)}"))
    await page.get_by_label("Files to upload").set_input_files([photo, notes])

    completed = page.locator('#file-list li.file[data-status="COMPLETED"]')
    await completed.nth(1).wait_for()
    assert await completed.count() == 2
    thumbnail = page.locator("#file-list li.file", has_text="photo.jpg").get_by_role("img", name="Preview of photo.jpg")
    await thumbnail.wait_for()
    await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=await thumbnail.element_handle())
    assert re.fullmatch(r"/api/files/[^/]+/thumbnail\?.*sig=.*", await thumbnail.get_attribute("src") or "")
    await page.locator("#queue li", has_text="notes.txt").get_by_text("done").wait_for()
    await page.screenshot(path=tmp_path / "uploaded.png", full_page=True)
    # Live from the event streams: the list was fetched a bounded number of times, not polled.
    listings = [r for r in requests if r.startswith("GET /api/files?")]
    assert len(listings) <= 6, listings
    rows = {
        r["original_name"]: r
        for r in await conn.fetch(
            "SELECT original_name, status::text, metadata->>'sha256' AS sha256 FROM files WHERE uploaded_by_id = $1",
            user.id,
        )
    }
    assert rows["photo.jpg"]["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert rows["notes.txt"]["sha256"] == hashlib.sha256(notes.read_bytes()).hexdigest()
    # Every PATCH carried its SHA-256 (tus checksum extension), so the server checked each body.
    assert any(r.startswith("PATCH /api/tus/") for r in requests)

    # Download: the very bytes that were uploaded, under their name.
    async with page.expect_download() as download_info:
        await page.get_by_label("Download photo.jpg").click()
    download = await download_info.value
    assert download.suggested_filename == "photo.jpg"
    assert (
        hashlib.sha256(Path(await download.path()).read_bytes()).digest() == hashlib.sha256(photo.read_bytes()).digest()
    )

    # Readable on a 360 px phone: nothing wider than the screen.
    await page.set_viewport_size({"width": 360, "height": 800})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await page.screenshot(path=tmp_path / "phone.png", full_page=True)
    await page.set_viewport_size({"width": 1100, "height": 900})

    # Delete by keyboard, through the confirmation dialog; "Keep it" first keeps it.
    delete = page.get_by_role("button", name="Delete notes.txt")
    await delete.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("button", name="Keep it").click()
    assert await page.locator("#file-list li.file").count() == 2
    await delete.click()
    await dialog.get_by_role("button", name="Delete").click()
    await page.locator("#file-list li.file", has_text="notes.txt").wait_for(state="detached")
    assert [
        r["original_name"]
        for r in await conn.fetch("SELECT original_name FROM files WHERE uploaded_by_id = $1", user.id)
    ] == ["photo.jpg"]
    assert page.problems == []


async def test_reload_in_the_middle_of_a_50_mib_upload_resumes_it(browser, chunkd, make_user, conn, tmp_path) -> None:
    server = chunkd("serve")
    user = await make_user()
    data = os.urandom(50 * MiB)
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    page = await open_page(browser, server.url + "/")
    await sign_in(page, user.email, user.password)

    # PATCHes 3 and 5 are held, never answered: at the first the upload is paused and resumed, at the
    # second the page is reloaded, with 24 MiB on the server.
    patches = 0
    held = asyncio.Event()

    async def gate(route: Any) -> None:
        nonlocal patches
        if route.request.method == "PATCH":
            patches += 1
            if patches in (3, 5):
                held.set()
                return
        await route.continue_()

    async def stored(expected: int) -> dict[str, Any]:
        row = await conn.fetchrow(
            "SELECT id, bytes_received, status::text FROM files WHERE uploaded_by_id = $1", user.id
        )
        assert row["status"] == "UPLOADING" and row["bytes_received"] == expected
        return dict(row)

    await page.route("**/api/tus/**", gate)
    await page.get_by_label("Files to upload").set_input_files(big)
    await asyncio.wait_for(held.wait(), TIMEOUT_MS / 1000)
    held.clear()
    await stored(16 * MiB)
    await page.get_by_role("button", name="Pause big.bin").click()
    await page.locator("#queue li", has_text="big.bin").get_by_text("paused at 32%").wait_for()
    await page.get_by_role("button", name="Resume big.bin").click()
    await asyncio.wait_for(held.wait(), TIMEOUT_MS / 1000)
    row = await stored(24 * MiB)
    await page.screenshot(path=tmp_path / "before-reload.png", full_page=True)
    await page.reload()
    await page.unroute("**/api/tus/**")

    await page.get_by_text(re.compile("Unfinished from before: big.bin")).wait_for()
    resumed_from: list[str] = []
    page.on("request", lambda r: resumed_from.append(r.method) if "/api/tus/" in r.url else None)
    await page.get_by_label("Files to upload").set_input_files(big)
    await page.locator("#queue li.resumed", has_text="big.bin").wait_for()
    await page.locator('#file-list li.file[data-status="COMPLETED"]', has_text="big.bin").wait_for()
    await page.screenshot(path=tmp_path / "resumed.png", full_page=True)

    assert resumed_from[0] == "HEAD" and "POST" not in resumed_from  # the same upload, asked for its offset
    rows = await conn.fetch(
        "SELECT id, status::text, size, metadata->>'sha256' AS sha256 FROM files WHERE uploaded_by_id = $1", user.id
    )
    assert [(r["id"], r["status"], r["size"]) for r in rows] == [(row["id"], "COMPLETED", 50 * MiB)]
    assert rows[0]["sha256"] == hashlib.sha256(data).hexdigest()
    path = Path(server.env["STORAGE_DIR"]) / (await conn.fetchval("SELECT path FROM files WHERE id = $1", row["id"]))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_admin_dashboard_shows_the_api_numbers(browser, chunkd, make_user, conn, tmp_path) -> None:
    server = chunkd("serve", "--no-worker")  # the rows made below stay as they are
    admin = await make_user(role="ADMIN")
    owner = await make_user()
    await insert_file(conn, owner.id, size=3 * MiB)
    await insert_file(conn, owner.id, size=1500, created_at=datetime.now(UTC) - timedelta(days=40))
    await insert_file(conn, owner.id, status="PROCESSING", size=70_000)
    failed = await insert_file(conn, owner.id, status="FAILED", name="broken.jpg", size=999)
    await conn.execute(
        "UPDATE files SET error = 'not an image: cannot identify the bytes', type = 'OTHER' WHERE id = $1", failed["id"]
    )

    page = await open_page(browser, server.url + "/")
    await sign_in(page, admin.email, admin.password)
    await page.get_by_role("link", name="Admin dashboard").click()
    await page.locator("#dashboard").wait_for(state="visible")
    await page.screenshot(path=tmp_path / "admin.png", full_page=True)

    users = await api(server, admin.token, "/api/admin/stats/users")
    queue = await api(server, admin.token, "/api/admin/stats/queue")
    stats = await api(server, admin.token, "/api/admin/stats/files")

    async def card(key: str) -> tuple[int, str]:
        node = page.locator(f'.card[data-stat="{key}"]')
        return int(await node.get_attribute("data-value")), await node.locator(".value").inner_text()

    for key in ("total", "active", "admins", "regular"):
        assert (await card(f"users.{key}"))[0] == users[key]
    assert await card("queue.waiting") == (queue["waiting"], str(queue["waiting"])) and queue["waiting"] == 1
    assert (await card("files.count"))[0] == sum(s["count"] for s in stats) == 4
    stored, shown = await card("files.bytes")
    assert stored == sum(s["total_size"] for s in stats) and shown == "3.2 MB"  # human units

    for key, name in (("type", "by-type"), ("status", "by-status")):
        expected: dict[str, int] = {}
        for s in stats:
            expected[s[key]] = expected.get(s[key], 0) + s["total_size"]
        bars = page.locator(f"#{name} .hbar")
        shown_bars = {
            await b.get_attribute(f"data-{key}"): int(await b.get_attribute("data-bytes")) for b in await bars.all()
        }
        assert shown_bars == expected

    for days in (30, 90, 365):
        await page.get_by_role("radio", name=f"{days} days").check()
        await page.locator(f'#daily-chart svg[aria-label="Uploads per day over {days} days"]').wait_for()
        daily = await api(server, admin.token, f"/api/admin/stats/uploads/daily?days={days}")
        bars = page.locator("#daily-chart rect.bar-rect")
        shown_days = [
            (
                await b.get_attribute("data-date"),
                int(await b.get_attribute("data-uploads")),
                int(await b.get_attribute("data-bytes")),
            )
            for b in await bars.all()
        ]
        assert shown_days == [(d["date"], d["uploads"], d["total_size"]) for d in daily]
        assert sum(d[1] for d in shown_days) == (3 if days == 30 else 4)

    reason = page.locator("#failed tr.failed-file")
    assert await reason.count() == 1
    assert "not an image: cannot identify the bytes" in await reason.inner_text()
    await reason.get_by_role("link", name="broken.jpg").click()
    await page.get_by_role("heading", name="broken.jpg").wait_for()
    assert "not an image" in await page.locator("#detail").inner_text()

    await page.goto(server.url + "/admin")
    assert int(await page.locator('.card[data-stat="db.connections"]').get_attribute("data-value")) >= 1
    assert page.problems == []


async def test_regular_users_are_refused_the_dashboard(browser, chunkd, make_user, tmp_path) -> None:
    server = chunkd("serve", "--no-worker")
    user = await make_user()
    page = await open_page(browser, server.url + "/")
    await sign_in(page, user.email, user.password)
    assert not await page.get_by_role("link", name="Admin dashboard").is_visible()
    admin_calls: list[str] = []
    page.on("request", lambda r: admin_calls.append(r.url) if "/api/admin/" in r.url else None)
    await page.goto(server.url + "/admin")
    await page.get_by_text("This dashboard is for administrators only").wait_for()
    assert not await page.locator("#dashboard").is_visible()
    await page.screenshot(path=tmp_path / "refused.png")
    assert admin_calls == []
    assert (await call(server, "GET", "/api/admin/stats/queue", user.token))[0] == 403  # the API refuses too


async def test_tokens_are_refreshed_and_a_revoked_session_returns_to_the_form(
    browser, chunkd, make_user, tmp_path
) -> None:
    server = chunkd("serve", "--no-worker", ACCESS_TOKEN_TTL="4s")
    user = await make_user()
    page = await open_page(browser, server.url + "/")
    await sign_in(page, user.email, user.password)
    first = await page.evaluate("JSON.parse(localStorage.getItem('chunkd.session')).refresh_token")
    await page.wait_for_function(
        "first => JSON.parse(localStorage.getItem('chunkd.session')).refresh_token !== first", arg=first, timeout=30_000
    )
    await asyncio.sleep(5)  # longer than an access token lives: the page must have refreshed again
    await page.get_by_label("Status").select_option("FAILED")
    await page.get_by_text("No files here yet.").wait_for()
    assert await page.locator("#signin").is_hidden()

    # Revoke the session server-side (as a sign-out elsewhere does): the next refresh fails, the form returns.
    token = await page.evaluate("JSON.parse(localStorage.getItem('chunkd.session')).access_token")
    assert (await call(server, "POST", "/api/auth/logout", token))[0] == 204
    await page.locator("#signin").wait_for(state="visible", timeout=30_000)
    assert "session has ended" in await page.locator("#notice").inner_text()
    await page.screenshot(path=tmp_path / "signed-out.png")


async def test_register_drop_a_file_and_problem_details_are_shown(browser, chunkd, make_user, conn) -> None:
    server = chunkd("serve", "--no-worker")  # the dropped file waits in PROCESSING until a worker starts
    taken = await make_user()
    page = await open_page(browser, server.url + "/")
    form = page.locator("#register-form")
    await form.get_by_label("Email").fill(taken.email)
    await form.get_by_label("Password (8 characters or more)").fill("long enough password")
    await form.get_by_role("button", name="Create account").click()
    alert = page.get_by_role("alert")
    await alert.wait_for()
    status, problem = await call(
        server, "POST", "/api/auth/register", json={"email": taken.email, "password": "long enough password"}
    )
    assert status == 409 and await alert.inner_text() == problem["detail"]  # the API's own detail, shown
    await page.locator("#signin-form").get_by_label("Email").fill(taken.email)
    await page.locator("#signin-form").get_by_label("Password").fill("wrong password")
    await page.locator("#signin-form").get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="wrong email or password").wait_for()

    await form.get_by_label("Email").fill("newcomer@example.com")
    await form.get_by_label("Password (8 characters or more)").fill("long enough password")
    await form.get_by_role("button", name="Create account").click()
    await page.get_by_text("newcomer@example.com").wait_for()

    # Drag and drop: a file dropped on the drop zone is uploaded like a chosen one.
    dropped = await page.evaluate_handle("""() => {
        const data = new DataTransfer();
        data.items.add(new File(["dropped on the page\\n"], "dropped.txt", {type: "text/plain"}));
        return data;
    }""")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url.removeprefix(server.url)))
    await page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    await page.locator('#file-list li.file[data-status="PROCESSING"]', has_text="dropped.txt").wait_for()
    for _ in range(600):  # the page opens the file's signed event stream
        if any(re.match(r"/api/files/[^/]+/events\?.*sig=", r) for r in requests):
            break
        await asyncio.sleep(0.1)
    listings = len([r for r in requests if r.startswith("/api/files?")])
    # A worker starts elsewhere: the row turns COMPLETED through the signed event stream alone.
    chunkd("worker", wait_path=None)
    await page.locator('#file-list li.file[data-status="COMPLETED"]', has_text="dropped.txt").wait_for()
    assert len([r for r in requests if r.startswith("/api/files?")]) == listings
    assert any(re.match(r"/api/files/[^/]+/events\?.*sig=", r) for r in requests)
    assert (
        await conn.fetchval("SELECT metadata->>'sha256' FROM files WHERE original_name = 'dropped.txt'")
        == hashlib.sha256(b"dropped on the page\n").hexdigest()
    )
    await page.get_by_role("button", name="Sign out").click()
    await page.locator("#signin").wait_for(state="visible")
