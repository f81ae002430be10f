"""Webhooks: targets checked against private addresses, events signed after the Standard Webhooks
convention, and the delivery loop the worker runs beside processing.

An event is a row of webhook_deliveries (one per webhook), written by a trigger (sql/0013) in the
transaction that creates the file or changes its status: nothing is announced that did not happen,
nothing that happened is lost. The loop claims due rows (FOR UPDATE SKIP LOCKED, with a lock that
expires, so a worker that dies mid-delivery only delays it: at least once), POSTs them, and records the
answer. Failures retry with exponential backoff for up to a day; a webhook failing for a day is disabled.

The target's address is checked when the webhook is made and again at every delivery, on the very
addresses the connection uses (the resolver below), so DNS pointing elsewhere later changes nothing.
Redirects are not followed (a 3xx is a failure) and a slow receiver times out (WEBHOOK_TIMEOUT)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import secrets
import socket
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from standardwebhooks.webhooks import Webhook as Signer

from service import db
from service.config import Settings
from service.errors import WebhookUrlRefused
from service.models import Webhook, WebhookDelivery
from service.store import webhooks as store

log = logging.getLogger("service.webhooks")

EVENTS = ("upload.created", "file.completed", "file.failed")
CHANNEL = "webhook_deliveries"  # NOTIFY from the trigger: something is due
BATCH = 16  # deliveries claimed (and sent concurrently) at a time
POLL_INTERVAL = 5.0  # seconds between claims when no NOTIFY comes (retries come due by time)
FIRST_RETRY = 2.0  # seconds; then x3 per attempt: 2, 6, 18 s ... capped at MAX_RETRY_DELAY
MAX_RETRY_DELAY = 6 * 3600
MAX_ERROR = 500  # characters of an error kept in the delivery row


class AddressRefused(OSError):
    """A webhook target resolved to an address chunkd does not call on a user's behalf."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def refused(address: str) -> bool:
    """Loopback, private, link-local, shared, reserved, multicast and unspecified addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def check_target(url: str, allow_private: bool) -> None:
    """A webhook URL must be http(s) with a host and no credentials, resolving to public addresses
    only (unless WEBHOOK_ALLOW_PRIVATE). Raises WebhookUrlRefused (422) naming the reason."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise WebhookUrlRefused(f"url is not a valid URL: {e}", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookUrlRefused("url must be an http:// or https:// URL with a host", field="url")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused("url must not carry credentials; the signature authenticates chunkd", field="url")
    if parts.fragment:
        raise WebhookUrlRefused("url must not have a #fragment", field="url")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise WebhookUrlRefused(f"url's host {parts.hostname} does not resolve: {e}", field="url") from None
    private = sorted({str(info[4][0]) for info in infos if refused(str(info[4][0]))})
    if private and not allow_private:
        raise WebhookUrlRefused(
            f"url's host {parts.hostname} resolves to a non-public address ({', '.join(private)});"
            " set WEBHOOK_ALLOW_PRIVATE=true to allow it",
            field="url",
        )


class CheckedResolver(AbstractResolver):
    """Resolves as aiohttp does, then refuses non-public addresses: the check is on the addresses the
    connection will use, not on an earlier lookup DNS could contradict."""

    def __init__(self, allow_private: bool) -> None:
        self._resolver = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        if not self._allow_private and any(refused(r["host"]) for r in results):
            raise AddressRefused(f"{host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._resolver.close()


def signed_headers(secret: str, message_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    timestamp = now or datetime.now(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Signer(secret).sign(message_id, timestamp, body),
        "Content-Type": "application/json",
        "User-Agent": "chunkd-webhooks",
    }


def retry_delay(attempts: int) -> float:
    return min(FIRST_RETRY * 3 ** (attempts - 1), MAX_RETRY_DELAY)


class Deliverer:
    """The worker's side task that sends webhook deliveries."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.settings, self.pool, self.poll_interval = settings, pool, poll_interval
        self._wake = asyncio.Event()

    def wake(self, _payload: str = "") -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled. Database trouble is waited out (the rows stay due); only a bug ends it."""
        async with self._session() as http:
            while True:
                try:
                    sent = await self._deliver_due(http)
                except db.DATABASE_FAULTS as e:
                    if not db.unavailable(e, self.settings):
                        log.warning("webhook deliveries paused: %s", e, extra={"action": "webhook_claim_failed"})
                    sent = 0
                if sent < BATCH:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                    self._wake.clear()

    async def run_once(self) -> int:
        """Sends what is due now (tests, one-shot runs); how many were attempted."""
        async with self._session() as http:
            return await self._deliver_due(http)

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(self.settings.webhook_allow_private), limit=BATCH, force_close=True
        )
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def _deliver_due(self, http: aiohttp.ClientSession) -> int:
        async with self.pool.acquire() as conn:
            due = await store.claim_deliveries(conn, BATCH, self.settings.webhook_timeout + 30)
        await asyncio.gather(*(self._deliver(http, d, w) for d, w in due))
        return len(due)

    async def _deliver(self, http: aiohttp.ClientSession, delivery: WebhookDelivery, webhook: Webhook) -> None:
        body = json.dumps(delivery.payload, separators=(",", ":"))
        headers = signed_headers(webhook.secret, delivery.id, body)
        status, error, started = None, None, time.monotonic()
        try:
            host = urlsplit(webhook.url).hostname or ""
            with contextlib.suppress(ValueError):  # a literal IP skips the resolver: check it here
                if refused(host) and not self.settings.webhook_allow_private:
                    raise AddressRefused(f"{host} is a non-public address")
            async with http.post(webhook.url, data=body.encode(), headers=headers, allow_redirects=False) as r:
                status = r.status
                await r.content.read(64 * 1024)  # a little of the answer, never all of a huge one
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except AddressRefused as e:
            error = f"refused: {e}; set WEBHOOK_ALLOW_PRIVATE=true to allow it"
        except aiohttp.ClientConnectorError as e:  # the resolver's refusal arrives wrapped
            refusal = e.os_error if isinstance(e.os_error, AddressRefused) else None
            error = (
                f"refused: {refusal}; set WEBHOOK_ALLOW_PRIVATE=true to allow it"
                if refusal
                else f"{type(e).__name__}: {e}"
            )
        except TimeoutError:
            error = f"no answer within WEBHOOK_TIMEOUT ({self.settings.webhook_timeout} s)"
        except (aiohttp.ClientError, OSError) as e:
            error = f"{type(e).__name__}: {e}"
        ms = round((time.monotonic() - started) * 1000)
        fields = {"webhook_id": webhook.id, "delivery_id": delivery.id, "status": status, "ms": ms}
        async with self.pool.acquire() as conn:
            if error is None and status is not None:
                await store.record_success(conn, delivery.id, webhook.id, status)
                log.info("webhook delivered", extra={"action": "webhook_delivered", **fields})
            else:
                reason = (error or "no status")[:MAX_ERROR]
                await store.record_failure(
                    conn, delivery.id, webhook.id, status, reason, retry_delay(delivery.attempts)
                )
                log.warning("webhook delivery failed: %s", error, extra={"action": "webhook_failed", **fields})
