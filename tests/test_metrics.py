"""GET /metrics: Prometheus text, no token, request counters by route pattern, scrape-time gauges."""

from __future__ import annotations

import uuid

from tests.support import insert_file, scrape


def requests(samples, route: str, status: str, method: str = "GET") -> float:
    return samples.get(("chunkd_http_requests_total", (("method", method), ("route", route), ("status", status))), 0.0)


async def test_request_counters_move_by_route_pattern_and_status(client, admin) -> None:
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get("/healthz")).status == 200
    assert (await client.get("/api/admin/stats/files")).status == 401
    assert (await client.get(f"/no/such/{uuid.uuid4().hex}")).status == 404
    assert (await client.request("PROPFIND", "/healthz")).status == 405
    assert (await client.get("/api/admin/stats/files", headers=admin.headers)).status == 200
    after = await scrape(client)
    assert requests(after, "/healthz", "200") - requests(before, "/healthz", "200") == 3
    assert requests(after, "/api/admin/stats/files", "401") - requests(before, "/api/admin/stats/files", "401") == 1
    assert requests(after, "/api/admin/stats/files", "200") - requests(before, "/api/admin/stats/files", "200") == 1
    assert requests(after, "unmatched", "404") - requests(before, "unmatched", "404") == 1
    assert requests(after, "unmatched", "405", "OTHER") - requests(before, "unmatched", "405", "OTHER") == 1
    assert not any("/no/such" in str(labels) or "PROPFIND" in str(labels) for _, labels in after)  # bounded labels
    count = ("chunkd_http_request_duration_seconds_count", (("method", "GET"), ("route", "/healthz")))
    assert after[count] - before.get(count, 0) == 3


async def test_gauges_are_computed_at_scrape_time(client, conn, admin) -> None:
    for status in ("PROCESSING", "PROCESSING", "UPLOADING", "COMPLETED"):
        await insert_file(conn, admin.id, status=status)
    samples = await scrape(client)
    assert samples[("chunkd_processing_queue_depth", (("state", "waiting"),))] == 2
    assert samples[("chunkd_processing_queue_depth", (("state", "claimed"),))] == 0
    assert samples[("chunkd_db_pool_connections", (("state", "max"),))] == 10
    assert samples[("chunkd_db_pool_connections", (("state", "in_use"),))] >= 0
    assert samples[("chunkd_db_pool_waiting", ())] == 0
    assert samples[("chunkd_chunk_memory_bytes", (("state", "used"),))] == 0
    assert samples[("chunkd_chunk_memory_bytes", (("state", "max"),))] == 512 * 1024 * 1024
    # The upload counters exist from the start (the uploads code increments them).
    assert ("chunkd_uploads_completed_total", ()) in samples


async def test_openmetrics_when_asked(client) -> None:
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).rstrip().endswith("# EOF")
