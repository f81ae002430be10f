"""Login protection: failed logins limited per account and per client address (429 + Retry-After), an
unknown email as slow as a wrong password, and a login flood that leaves other users' uploads alone."""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp

from tests.uploading import UPLOAD_ENV, noise_png, sha256, upload, wait_for_status

MAX_FAILURES = 5
SETTINGS_ENV = {**UPLOAD_ENV, "LOGIN_MAX_FAILURES": str(MAX_FAILURES), "LOGIN_WINDOW": "15m"}


async def attempt(client, email: str, password: str, source: str = "127.0.0.1") -> aiohttp.ClientResponse:
    """A login from `source` (any 127/8 address reaches the server on Linux): another client address."""
    url = f"http://{client.host}:{client.port}/api/auth/login"
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))) as http,
        http.post(url, json={"email": email, "password": password}) as r,
    ):
        await r.read()
        return r


async def test_failures_are_limited_per_account_and_per_address(client, make_user) -> None:
    victim, bystander, elsewhere = await make_user(), await make_user(), await make_user()
    for _ in range(MAX_FAILURES):
        assert (await attempt(client, victim.email, "wrong password")).status == 401
    blocked = await attempt(client, victim.email, victim.password)  # even the right password, for now
    assert blocked.status == 429 and 1 <= int(blocked.headers["Retry-After"]) <= 900
    assert blocked.content_type == "application/problem+json"
    # The account is throttled from every address...
    assert (await attempt(client, victim.email, victim.password, "127.0.0.2")).status == 429
    # ...and the address for every account.
    assert (await attempt(client, bystander.email, bystander.password)).status == 429
    assert (await attempt(client, elsewhere.email, elsewhere.password, "127.0.0.3")).status == 200


async def test_a_success_forgives_the_accounts_failures(client, make_user) -> None:
    user = await make_user()
    for _ in range(MAX_FAILURES - 1):
        assert (await attempt(client, user.email, "wrong password", "127.0.0.4")).status == 401
    assert (await attempt(client, user.email, user.password, "127.0.0.5")).status == 200
    for _ in range(MAX_FAILURES - 1):
        assert (await attempt(client, user.email, "wrong password", "127.0.0.5")).status == 401


async def test_an_unknown_email_costs_the_same_as_a_wrong_password(client, make_user) -> None:
    user = await make_user()

    async def timed(email: str, source: str) -> float:
        started = time.perf_counter()
        assert (await attempt(client, email, "wrong password", source)).status == 401
        return time.perf_counter() - started

    known = [await timed(user.email, f"127.0.1.{i}") for i in range(3)]
    unknown = [await timed(f"nobody{i}@example.com", f"127.0.2.{i}") for i in range(3)]
    # argon2 dominates both; without the dummy verification an unknown email would answer in ~1 ms.
    assert statistics.median(unknown) > 0.5 * statistics.median(known), (known, unknown)


async def test_a_login_flood_is_throttled_while_another_user_uploads(served, make_user) -> None:
    victim, uploader = await make_user(), await make_user()
    data = noise_png(300, 300)  # ~270 KiB: five 64 KiB chunks
    flood = [asyncio.create_task(attempt(served, victim.email, f"guess {i}")) for i in range(60)]
    started = time.monotonic()
    file_id = await upload(served, uploader, data, "during-the-flood.png")
    file = await wait_for_status(served, uploader, file_id, timeout=120)
    upload_seconds = time.monotonic() - started
    results = await asyncio.gather(*flood)
    statuses = [r.status for r in results]
    assert file["status"] == "COMPLETED" and file["metadata"]["sha256"] == sha256(data)
    # The attempts counted before any failed: no more than the limit reached argon2, the rest were 429.
    assert statuses.count(401) <= MAX_FAILURES and statuses.count(429) >= 60 - MAX_FAILURES, statuses
    assert all(r.headers.get("Retry-After", "").isdigit() for r in results if r.status == 429)
    assert upload_seconds < 60, upload_seconds
