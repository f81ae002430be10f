"""Webhooks: register a URL for file events (the secret is shown once), list, delete, and see what
was delivered. A user hears of their own files; an admin's webhook may ask for everyone's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from service import webhooks
from service.auth import current_user, require_admin
from service.errors import WebhookNotFound
from service.keys import pool_key, settings_key
from service.models import Webhook, WebhookDelivery
from service.store import webhooks as store
from service.validation import Field, path_id, read_json, read_page

URL = Field("url", str, required=True, min_len=1, max_len=2000)
EVENTS = Field(
    "events",
    list,
    required=True,
    min_items=1,
    max_len=len(webhooks.EVENTS),
    items=Field("event", str, choices=webhooks.EVENTS),
)
DESCRIPTION = Field("description", str, nullable=True, max_len=500)
ALL_USERS = Field("all_users", bool)


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "url": webhook.url,
        "events": list(webhook.events),
        "all_users": webhook.all_users,
        "description": webhook.description,
        "created_at": webhook.created_at.isoformat(),
        "failing_since": _time(webhook.failing_since),
        "disabled_at": _time(webhook.disabled_at),
    }


async def create_webhook(request: web.Request) -> web.Response:
    user = current_user(request)
    settings = request.app[settings_key]
    body = await read_json(request, URL, EVENTS, DESCRIPTION, ALL_USERS)
    events = list(dict.fromkeys(body["events"]))
    if body.get("all_users"):
        require_admin(request)  # everyone's files: admins (with the admin scope) only
    url = body["url"].strip()
    await webhooks.check_target(url, settings.webhook_allow_private)
    secret = webhooks.new_secret()
    async with request.app[pool_key].acquire() as conn:
        row = await store.insert_webhook(
            conn, user.id, url, events, body.get("all_users", False), body.get("description"), secret
        )
    return web.json_response({**webhook_json(row), "secret": secret}, status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    async with request.app[pool_key].acquire() as conn:
        rows = await store.list_webhooks(conn, current_user(request).id)
    return web.json_response({"webhooks": [webhook_json(w) for w in rows]})


async def delete_webhook(request: web.Request) -> web.Response:
    webhook_id = path_id(request)
    async with request.app[pool_key].acquire() as conn:
        if not await store.delete_webhook(conn, webhook_id, current_user(request).id):
            raise WebhookNotFound(f"webhook {webhook_id}")
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    webhook_id = path_id(request)
    page = read_page(request)
    async with request.app[pool_key].acquire() as conn:
        found = await store.list_deliveries(conn, webhook_id, current_user(request).id, page.limit, page.offset)
    if found is None:
        raise WebhookNotFound(f"webhook {webhook_id}")
    rows, total = found
    return web.json_response({"deliveries": [_delivery_json(d) for d in rows], "pagination": page.pagination(total)})


def _delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    data = delivery.payload.get("data")
    return {
        "id": delivery.id,
        "event": delivery.event_type,
        "file_id": data.get("id") if isinstance(data, dict) else None,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": _time(delivery.created_at),
        "last_attempt_at": _time(delivery.last_attempt_at),
        "next_attempt_at": _time(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "delivered_at": _time(delivery.delivered_at),
    }


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
