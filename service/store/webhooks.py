"""webhooks and webhook_deliveries (the outbox the file triggers of sql/0013 write)."""

from __future__ import annotations

import asyncpg

from service.models import Webhook, WebhookDelivery
from service.store.rows import columns, row_to

WEBHOOK_COLUMNS = columns(Webhook)
DELIVERY_COLUMNS = columns(WebhookDelivery)

INSERT_WEBHOOK = f"""
INSERT INTO webhooks (user_id, url, events, all_users, description, secret) VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {WEBHOOK_COLUMNS}
"""


async def insert_webhook(
    conn: asyncpg.Connection,
    user_id: str,
    url: str,
    events: list[str],
    all_users: bool,
    description: str | None,
    secret: str,
) -> Webhook:
    return row_to(Webhook, await conn.fetchrow(INSERT_WEBHOOK, user_id, url, events, all_users, description, secret))


LIST_WEBHOOKS = f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = $1 ORDER BY created_at, id"


async def list_webhooks(conn: asyncpg.Connection, user_id: str) -> list[Webhook]:
    return [row_to(Webhook, r) for r in await conn.fetch(LIST_WEBHOOKS, user_id)]


DELETE_WEBHOOK = "DELETE FROM webhooks WHERE id = $1 AND user_id = $2 RETURNING id"


async def delete_webhook(conn: asyncpg.Connection, webhook_id: str, user_id: str) -> bool:
    """Removes the webhook and its deliveries (cascade); False for a missing one or anyone else's."""
    return await conn.fetchval(DELETE_WEBHOOK, webhook_id, user_id) is not None


OWNS_WEBHOOK = "SELECT 1 FROM webhooks WHERE id = $1 AND user_id = $2"
LIST_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1
 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3
"""
COUNT_DELIVERIES = "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1"


async def list_deliveries(
    conn: asyncpg.Connection, webhook_id: str, user_id: str, limit: int, offset: int
) -> tuple[list[WebhookDelivery], int] | None:
    """A page of the webhook's deliveries, newest first, and their total; None if it is not the user's."""
    if await conn.fetchval(OWNS_WEBHOOK, webhook_id, user_id) is None:
        return None
    rows = await conn.fetch(LIST_DELIVERIES, webhook_id, limit, offset)
    return [row_to(WebhookDelivery, r) for r in rows], await conn.fetchval(COUNT_DELIVERIES, webhook_id)


# Due, not being sent by anyone (or by someone whose lock ran out: it died), of a live webhook.
CLAIM_DELIVERIES = f"""
UPDATE webhook_deliveries d SET locked_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
  FROM webhooks w
 WHERE w.id = d.webhook_id AND d.id IN (
       SELECT d2.id FROM webhook_deliveries d2 JOIN webhooks w2 ON w2.id = d2.webhook_id
        WHERE d2.status = 'pending' AND d2.next_attempt_at <= now() AND w2.disabled_at IS NULL
          AND (d2.locked_until IS NULL OR d2.locked_until < now())
        ORDER BY d2.next_attempt_at LIMIT $1 FOR UPDATE OF d2 SKIP LOCKED)
RETURNING {columns(WebhookDelivery, "d", "d_")}, {columns(Webhook, "w", "w_")}
"""


async def claim_deliveries(
    conn: asyncpg.Connection, limit: int, lock_seconds: float
) -> list[tuple[WebhookDelivery, Webhook]]:
    """Due deliveries with their webhooks, locked for `lock_seconds` (a dead deliverer's come back)."""
    rows = await conn.fetch(CLAIM_DELIVERIES, limit, float(lock_seconds))
    return [(row_to(WebhookDelivery, r, "d_"), row_to(Webhook, r, "w_")) for r in rows]


DELIVERED = """
UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_attempt_at = now(),
                              last_status_code = $2, last_error = NULL, locked_until = NULL
 WHERE id = $1
"""
WEBHOOK_SUCCEEDED = "UPDATE webhooks SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL"


async def record_success(conn: asyncpg.Connection, delivery_id: str, webhook_id: str, status: int) -> None:
    async with conn.transaction():
        await conn.execute(DELIVERED, delivery_id, status)
        await conn.execute(WEBHOOK_SUCCEEDED, webhook_id)


# Retried until a day after the event; then the delivery is given up.
FAILED_ATTEMPT = """
UPDATE webhook_deliveries SET last_attempt_at = now(), last_status_code = $2, last_error = $3, locked_until = NULL,
       next_attempt_at = now() + make_interval(secs => $4),
       status = CASE WHEN created_at < now() - interval '24 hours' THEN 'failed' ELSE 'pending' END
 WHERE id = $1
"""
# A webhook that has failed for a day without a single success is disabled.
WEBHOOK_FAILED = """
UPDATE webhooks SET failing_since = coalesce(failing_since, now()),
       disabled_at = CASE WHEN failing_since < now() - interval '24 hours' THEN now() ELSE disabled_at END
 WHERE id = $1
"""


async def record_failure(
    conn: asyncpg.Connection, delivery_id: str, webhook_id: str, status: int | None, error: str, retry_in: float
) -> None:
    async with conn.transaction():
        await conn.execute(FAILED_ATTEMPT, delivery_id, status, error, float(retry_in))
        await conn.execute(WEBHOOK_FAILED, webhook_id)
