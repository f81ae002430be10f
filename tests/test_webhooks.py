"""Webhooks through real servers: chunkd (with its worker) and a receiver started here (aiohttp, a free
port). file.completed arrives with a valid Standard Webhooks signature, again after the receiver
answered 500 once; redirects are not followed, slow receivers time out, private targets are refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.app import create_app
from service.webhooks import Deliverer, new_secret
from tests.support import make_settings
from tests.uploading import UPLOAD_ENV, jpeg, sha256, upload, wait_for_status

SETTINGS_ENV = {**UPLOAD_ENV, "WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_TIMEOUT": "2s"}


@dataclass
class Receiver:
    """Answers each event type's requests with `answers[type]` in turn (then 200); records every request."""

    answers: dict[str, list[int | str]] = field(default_factory=dict)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        self.arrived.set()
        planned = self.answers.get(json.loads(body)["type"], [])
        answer = planned.pop(0) if planned else 200
        if answer == "slow":
            await asyncio.sleep(10)
            return web.Response(status=200)
        if answer == 302:
            raise web.HTTPFound(self.url.replace("/hook", "/elsewhere"))
        return web.Response(status=int(answer))

    def events(self, event_type: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.received if json.loads(b)["type"] == event_type]

    async def wait_for(self, count: int, event_type: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events(event_type)) < count:
            assert time.monotonic() < deadline, f"{len(self.events(event_type))} {event_type} after {timeout}s"
            self.arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 1)


@contextlib.asynccontextmanager
async def receiver(**answers: list[int | str]) -> AsyncIterator[Receiver]:
    hook = Receiver({name.replace("_", "."): planned for name, planned in answers.items()})
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    app.router.add_post("/elsewhere", hook.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield hook
    finally:
        await runner.cleanup()


async def register(client, user, url: str, events: list[str], **extra) -> dict:
    r = await client.post("/api/webhooks", headers=user.headers, json={"url": url, "events": events, **extra})
    assert r.status == 201, await r.text()
    return await r.json()


async def settled(client, user, webhook_id: str, timeout: float = 20) -> list[dict]:
    """The webhook's deliveries once none is pending (the receiver may have answered before the
    worker recorded the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"/api/webhooks/{webhook_id}/deliveries", headers=user.headers)
        assert r.status == 200
        listed = (await r.json())["deliveries"]
        if all(d["status"] != "pending" for d in listed) or time.monotonic() > deadline:
            return listed
        await asyncio.sleep(0.2)


async def test_file_completed_arrives_signed_and_again_after_a_500(served, user, make_user) -> None:
    other = await make_user()
    async with receiver(file_completed=[500]) as hook:
        webhook = await register(served, user, hook.url, ["file.completed", "upload.created"], description="mine")
        assert webhook["secret"].startswith("whsec_")
        r = await served.get("/api/webhooks", headers=user.headers)
        assert [w["id"] for w in (await r.json())["webhooks"]] == [webhook["id"]]
        assert "secret" not in (await r.json())["webhooks"][0]  # shown once
        await upload(served, other, b"someone else's file", "theirs.bin")  # not this user's: not sent

        data = jpeg(320, 240)
        file_id = await upload(served, user, data, "photo.jpg")
        assert (await wait_for_status(served, user, file_id))["status"] == "COMPLETED"
        await hook.wait_for(2, "file.completed")  # the 500, then the retry

        first, second = hook.events("file.completed")
        assert first[0]["webhook-id"] == second[0]["webhook-id"]  # one message, delivered twice
        for headers, body in (first, second):
            Webhook(webhook["secret"]).verify(body, headers)  # raises unless the signature is valid
            assert headers["webhook-signature"].startswith("v1,")
        event = json.loads(second[1])
        assert event["type"] == "file.completed" and event["data"]["id"] == file_id
        assert event["data"]["status"] == "COMPLETED" and event["data"]["sha256"] == sha256(data)
        assert event["data"]["uploaded_by_id"] == user.id
        created = [json.loads(b)["data"]["id"] for _, b in hook.events("upload.created")]
        assert created == [file_id]
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 32).verify(first[1], first[0])

    listed = await settled(served, user, webhook["id"])
    completed = next(d for d in listed if d["event"] == "file.completed")
    assert completed["status"] == "delivered" and completed["attempts"] == 2 and completed["last_status_code"] == 200
    assert completed["file_id"] == file_id and completed["delivered_at"]


async def test_an_admins_webhook_may_hear_everyones_files(served, user, admin) -> None:
    async with receiver() as hook:
        r = await served.post(
            "/api/webhooks", headers=user.headers, json={"url": hook.url, "events": ["file.failed"], "all_users": True}
        )
        assert r.status == 403
        await register(served, admin, hook.url, ["file.failed"], all_users=True)
        file_id = await upload(served, user, b"GIF89a this is not really a gif", "broken.gif", mimetype="image/gif")
        assert (await wait_for_status(served, user, file_id))["status"] == "FAILED"
        await hook.wait_for(1, "file.failed")
        assert json.loads(hook.events("file.failed")[0][1])["data"]["error"]


async def test_redirects_are_not_followed_and_slow_receivers_time_out(served, user) -> None:
    async with receiver(upload_created=[302, "slow"]) as hook:
        webhook = await register(served, user, hook.url, ["upload.created"])
        await upload(served, user, b"x" * 10, "a.bin")
        await hook.wait_for(3, "upload.created")  # the 302, the slow one, and a retry that worked
        paths = [h.get("Host") for h, _ in hook.received]
        assert len(paths) == 3  # nothing was sent to the redirect's target by following it
        attempts = [
            (d["status"], d["attempts"], d["last_status_code"]) for d in await settled(served, user, webhook["id"])
        ]
        assert attempts == [("delivered", 3, 200)]


async def test_private_targets_are_refused_unless_allowed(
    aiohttp_client, database_url, storage_dir, make_user, conn: asyncpg.Connection
) -> None:
    settings = make_settings(database_url, storage_dir, WEBHOOK_ALLOW_PRIVATE="false")
    client = await aiohttp_client(create_app(settings))
    user = await make_user()
    for url in (
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/x",
    ):
        r = await client.post("/api/webhooks", headers=user.headers, json={"url": url, "events": ["file.completed"]})
        body = await r.json()
        assert r.status == 422 and body["code"] == "WEBHOOK_URL_REFUSED" and "non-public" in body["detail"], url
    # Allowed when made, but the delivery checks again, on the addresses it connects to.
    async with receiver() as hook:
        webhook_id = await conn.fetchval(
            "INSERT INTO webhooks (user_id, url, events, secret) VALUES ($1, $2, '{upload.created}', $3) RETURNING id",
            user.id,
            hook.url.replace("127.0.0.1", "localhost"),
            new_secret(),
        )
        await conn.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_type, payload)"
            " VALUES ($1, 'upload.created', '{\"type\": \"upload.created\"}')",
            webhook_id,
        )
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            assert await Deliverer(settings, pool).run_once() == 1
        finally:
            await pool.close()
        assert hook.received == []
    row = await conn.fetchrow("SELECT status, last_error, next_attempt_at > now() AS later FROM webhook_deliveries")
    assert row["status"] == "pending" and "refused" in row["last_error"] and row["later"]


async def test_webhook_bad_input(client, user, make_user) -> None:
    other = await make_user()
    cases = [
        ({"url": "ftp://example.com/x", "events": ["file.completed"]}, "url"),
        ({"url": "javascript:alert(1)", "events": ["file.completed"]}, "url"),
        ({"url": "http://", "events": ["file.completed"]}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x", "events": ["file.completed"]}, "url"),
        ({"url": "http://no-such-host.invalid/x", "events": ["file.completed"]}, "url"),
        ({"url": "http://127.0.0.1/x", "events": ["file.deleted"]}, "events[0]"),
        ({"url": "http://127.0.0.1/x", "events": []}, "events"),
        ({"url": "http://127.0.0.1/x", "events": "file.completed"}, "events"),
        ({"url": 5, "events": ["file.completed"]}, "url"),
        ({"url": "http://127.0.0.1/x", "events": ["file.completed"], "secret": "mine"}, "secret"),
        ({"events": ["file.completed"]}, "url"),
    ]
    for body, where in cases:
        r = await client.post("/api/webhooks", headers=user.headers, json=body)
        problem = await r.json()
        assert r.status == 422 and problem["field"] == where, (body, problem)
    mine = await register(client, user, "http://127.0.0.1:9/x", ["file.completed"])
    assert (await client.delete(f"/api/webhooks/{mine['id']}", headers=other.headers)).status == 404
    r = await client.get(f"/api/webhooks/{mine['id']}/deliveries", headers=other.headers)
    assert r.status == 404 and (await r.json())["code"] == "WEBHOOK_NOT_FOUND"
    assert (await client.delete(f"/api/webhooks/{mine['id']}", headers=user.headers)).status == 204
    assert (await client.get(f"/api/webhooks/{mine['id']}/deliveries", headers=user.headers)).status == 404


async def test_a_day_of_failures_gives_up_the_delivery_and_disables_the_webhook(
    settings, user, conn, database_url
) -> None:
    webhook_id = await conn.fetchval(
        "INSERT INTO webhooks (user_id, url, events, secret, failing_since) VALUES ($1, 'http://127.0.0.1:9/closed',"
        " '{upload.created}', $2, now() - interval '25 hours') RETURNING id",
        user.id,
        new_secret(),
    )
    await conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event_type, payload, created_at) VALUES"
        " ($1, 'upload.created', '{\"type\": \"upload.created\"}', now() - interval '25 hours')",
        webhook_id,
    )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        assert await Deliverer(settings, pool).run_once() == 1
        assert await Deliverer(settings, pool).run_once() == 0  # given up: nothing due any more
    finally:
        await pool.close()
    row = await conn.fetchrow("SELECT status, attempts, last_error FROM webhook_deliveries")
    assert (row["status"], row["attempts"]) == ("failed", 1) and "Connect" in row["last_error"]
    assert await conn.fetchval("SELECT disabled_at IS NOT NULL FROM webhooks WHERE id = $1", webhook_id)
    # A disabled webhook hears nothing more.
    await conn.execute(
        "INSERT INTO files (original_name, filename, mimetype, size, type, path, uploaded_by_id,"
        " chunk_size) VALUES ('a', 'b', 'text/plain', 1, 'OTHER', 'p', $1, 1)",
        user.id,
    )
    assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
