"""The one route table."""

from __future__ import annotations

from aiohttp import web

from service.handlers import (
    admin,
    auth,
    docs,
    files,
    health,
    metrics,
    pages,
    posts,
    tokens,
    tus,
    uploads,
    users,
    webhooks,
)
from service.webui import STATIC_DIR

ROUTES: list[web.AbstractRouteDef] = [
    web.get("/healthz", health.get_healthz, allow_head=True),
    web.get("/readyz", health.get_readyz, allow_head=True),
    # accounts and posts
    web.post("/api/auth/register", auth.register),
    web.post("/api/auth/login", auth.login),
    web.post("/api/auth/refresh", auth.refresh),
    web.post("/api/auth/logout", auth.logout),
    web.post("/api/auth/password", auth.change_password),
    web.get("/api/auth/sessions", auth.list_sessions, allow_head=False),
    web.delete("/api/auth/sessions/{id}", auth.delete_session),
    web.post("/api/tokens", tokens.create_token),
    web.get("/api/tokens", tokens.list_tokens, allow_head=False),
    web.delete("/api/tokens/{id}", tokens.delete_token),
    web.post("/api/webhooks", webhooks.create_webhook),
    web.get("/api/webhooks", webhooks.list_webhooks, allow_head=False),
    web.delete("/api/webhooks/{id}", webhooks.delete_webhook),
    web.get("/api/webhooks/{id}/deliveries", webhooks.list_deliveries, allow_head=False),
    web.get("/api/users/me", users.get_me),
    web.get("/api/users", users.list_users),
    web.get("/api/users/{id}", users.get_user),
    web.patch("/api/users/{id}", users.patch_user),
    web.delete("/api/users/{id}", users.delete_user),
    web.delete("/api/users/{id}/sessions", users.revoke_user_sessions),
    web.get("/api/admin/stats/users", users.get_user_stats),
    web.post("/api/posts", posts.create_post),
    web.get("/api/posts", posts.list_posts),
    web.get("/api/posts/recent", posts.list_recent_posts),
    web.get("/api/posts/{id}", posts.get_post),
    web.patch("/api/posts/{id}", posts.patch_post),
    web.delete("/api/posts/{id}", posts.delete_post),
    # admin and ops
    web.get("/api/admin/stats/files", admin.get_file_stats),
    web.get("/api/admin/stats/uploads/daily", admin.get_daily_upload_stats),
    web.get("/api/admin/stats/queue", admin.get_queue_stats),
    web.get("/api/admin/db", admin.get_database_health),
    web.get("/metrics", metrics.get_metrics),
    web.get("/openapi.json", docs.get_openapi),
    # uploads and files
    web.post("/api/uploads", uploads.create_upload),
    web.get("/api/uploads/{id}", uploads.get_upload, allow_head=False),
    web.put("/api/uploads/{id}/chunks/{index}", uploads.put_chunk),
    web.post("/api/uploads/{id}/complete", uploads.complete_upload),
    web.delete("/api/uploads/{id}", uploads.delete_upload),
    web.get("/api/files", files.list_files, allow_head=False),
    web.get("/api/files/{id}", files.get_file, allow_head=False),
    web.get("/api/files/{id}/events", files.get_file_events, allow_head=False),
    web.get("/api/files/{id}/content", files.get_file_content),
    web.get("/api/files/{id}/thumbnail", files.get_file_thumbnail),
    web.delete("/api/files/{id}", files.delete_file),
    # tus: one route per resource, dispatched on the effective method (X-HTTP-Method-Override)
    web.route("*", "/api/tus", tus.dispatch_collection),
    web.route("*", "/api/tus/", tus.dispatch_collection),
    web.route("*", "/api/tus/{upload_id}", tus.dispatch_upload),
    # the web UI (service/webui.py): pages, their static files (hashed URLs), npm-installed browser code
    web.get("/", pages.get_index),
    web.get("/admin", pages.get_admin),
    web.static("/static", STATIC_DIR, name="static", append_version=True),
    web.get("/vendor/{name}", pages.get_vendor_file),
]
