"""Prometheus metrics, defined once per process; /metrics renders them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("chunkd_http_requests_total", "HTTP requests", ["route", "method", "status"])
REQUEST_SECONDS = Histogram("chunkd_http_request_duration_seconds", "HTTP request latency", ["route", "method"])
BYTES_RECEIVED = Counter("chunkd_upload_bytes_received_total", "Upload bytes stored as chunks", ["protocol"])
UPLOADS_CREATED = Counter("chunkd_uploads_created_total", "Upload sessions created", ["protocol"])
UPLOADS_COMPLETED = Counter("chunkd_uploads_completed_total", "Files that reached COMPLETED")
UPLOADS_FAILED = Counter("chunkd_uploads_failed_total", "Files that reached FAILED")
PROCESSING_SECONDS = Histogram(
    "chunkd_processing_duration_seconds",
    "Time from claim to COMPLETED/FAILED",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
# Set at scrape time by GET /metrics.
QUEUE_DEPTH = Gauge(
    "chunkd_processing_queue_depth", "Files in PROCESSING, waiting for or claimed by a worker", ["state"]
)
PROCESSING_BLOCKED = Gauge(
    "chunkd_processing_blocked",
    "Files in PROCESSING that their environment holds back (full, read-only or failing disk, missing "
    "STORAGE_DIR, unreachable store), by reason; they are retried until it passes",
    ["reason"],
)
POOL_CONNECTIONS = Gauge("chunkd_db_pool_connections", "This process's database pool", ["state"])
POOL_WAITING = Gauge("chunkd_db_pool_waiting", "Tasks of this process waiting for a pooled connection")
CHUNK_MEMORY = Gauge(
    "chunkd_chunk_memory_bytes",
    "Memory for upload bodies this process holds, each byte counted twice (used), and may hold (max: CHUNK_MEMORY)",
    ["state"],
)
