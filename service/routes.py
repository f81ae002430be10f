"""The one route table."""
from __future__ import annotations

from aiohttp import web

from service.handlers import files, health, tus, uploads

ROUTES: list[web.AbstractRouteDef] = [
    web.get("/healthz", health.get_healthz, allow_head=True),
    web.get("/readyz", health.get_readyz, allow_head=True),
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
]
