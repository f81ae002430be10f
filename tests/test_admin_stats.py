"""Admin statistics: equal to what the database holds; admins only."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import asyncpg
import pytest

from tests.support import insert_file

# (type, status, size, days ago): several groups, FAILED ones, averages that round half up.
FILES = [
    ("IMAGE", "COMPLETED", 100, 0),
    ("IMAGE", "COMPLETED", 101, 0),
    ("IMAGE", "COMPLETED", 300, 2),
    ("IMAGE", "FAILED", 7, 1),
    ("IMAGE", "FAILED", 8, 40),
    ("DOCUMENT", "COMPLETED", 5_000_000_000, 3),
    ("DOCUMENT", "UPLOADING", 10, 0),
    ("VIDEO", "PROCESSING", 3, 5),
    ("VIDEO", "FAILED", 1, 5),
    ("VIDEO", "FAILED", 2, 5),
    ("AUDIO", "COMPLETED", 0, 400),
    ("OTHER", "FAILED", 11, 29),
]


async def insert_files(conn: asyncpg.Connection, user_id: str, files=FILES) -> datetime:
    now = datetime.now(UTC)
    for type_, status, size, days_ago in files:
        await insert_file(
            conn, user_id, size=size, type=type_, status=status, created_at=now - timedelta(days=days_ago)
        )
    return now


async def test_file_stats_equal_the_database(client, conn, admin) -> None:
    await insert_files(conn, admin.id)
    response = await client.get("/api/admin/stats/files", headers=admin.headers)
    assert response.status == 200
    body = await response.json()
    expected: dict[tuple[str, str], list[int]] = {}
    for type_, status, size, _ in FILES:
        expected.setdefault((type_, status), []).append(size)
    assert {(g["type"], g["status"]): (g["count"], g["total_size"], g["average_size"]) for g in body} == {
        key: (len(sizes), sum(sizes), int(sum(sizes) / len(sizes) + 0.5)) for key, sizes in expected.items()
    }
    assert next(g for g in body if g["type"] == "IMAGE" and g["status"] == "FAILED")["average_size"] == 8  # 7.5 -> 8
    rows = await conn.fetch("SELECT type::text, status::text, count(*) FROM files GROUP BY 1, 2")
    assert sum(g["count"] for g in body) == sum(r["count"] for r in rows) == len(FILES)


async def test_file_stats_of_an_empty_database_is_an_empty_list(client, admin) -> None:
    response = await client.get("/api/admin/stats/files", headers=admin.headers)
    assert response.status == 200 and await response.json() == []


async def test_daily_uploads_zero_fill_every_utc_day(client, conn, admin) -> None:
    now = await insert_files(conn, admin.id)
    response = await client.get("/api/admin/stats/uploads/daily?days=30", headers=admin.headers)
    assert response.status == 200
    body = await response.json()
    today = now.date()
    assert [d["date"] for d in body] == [(today - timedelta(days=n)).isoformat() for n in range(29, -1, -1)]
    by_day: dict[date, list[int]] = {}
    for _, _, size, days_ago in FILES:
        by_day.setdefault((now - timedelta(days=days_ago)).date(), []).append(size)
    for day in body:
        sizes = by_day.get(date.fromisoformat(day["date"]), [])
        assert (day["uploads"], day["total_size"]) == (len(sizes), sum(sizes)), day
    assert sum(d["uploads"] for d in body) == await conn.fetchval(
        "SELECT count(*) FROM files WHERE created_at >= (now() AT TIME ZONE 'UTC')::date - 29"
    )


async def test_daily_uploads_count_by_utc_date(client, conn, admin) -> None:
    """A file made at 23:30 in UTC-05:00 belongs to the next UTC day."""
    today = datetime.now(UTC).date()
    late = datetime.combine(today - timedelta(days=2), datetime.min.time(), timezone(timedelta(hours=-5)))
    await insert_file(conn, admin.id, size=42, type="OTHER", created_at=late.replace(hour=23, minute=30))
    body = await (await client.get("/api/admin/stats/uploads/daily?days=3", headers=admin.headers)).json()
    assert body == [
        {"date": (today - timedelta(days=2)).isoformat(), "uploads": 0, "total_size": 0},
        {"date": (today - timedelta(days=1)).isoformat(), "uploads": 1, "total_size": 42},
        {"date": today.isoformat(), "uploads": 0, "total_size": 0},
    ]


@pytest.mark.parametrize("days", ["0", "367", "-1", "abc", "1.5", "1e3"])
async def test_daily_uploads_days_out_of_range(client, admin, days: str) -> None:
    response = await client.get(f"/api/admin/stats/uploads/daily?days={days}", headers=admin.headers)
    assert response.status == 422
    body = await response.json()
    assert body["code"] == "VALIDATION_FAILED" and body["field"] == "days"


async def test_daily_uploads_accepts_the_bounds(client, admin) -> None:
    for days in (1, 366):
        response = await client.get(f"/api/admin/stats/uploads/daily?days={days}", headers=admin.headers)
        assert response.status == 200 and len(await response.json()) == days


async def test_queue_counts_files_waiting_for_and_held_by_a_worker(client, conn, admin) -> None:
    empty = await client.get("/api/admin/stats/queue", headers=admin.headers)
    assert empty.status == 200 and await empty.json() == {"waiting": 0, "claimed": 0, "blocked": 0}
    await insert_files(conn, admin.id)  # one PROCESSING file among the others, no worker holds it
    await insert_files(conn, admin.id, [("IMAGE", "PROCESSING", 5, 0), ("IMAGE", "PROCESSING", 6, 0)])
    await conn.execute("INSERT INTO workers (id, hostname, pid) VALUES ('w1', 'here', 1)")
    await conn.execute("UPDATE files SET worker_id = 'w1' WHERE id = (SELECT id FROM files WHERE size = 6)")
    await conn.execute("UPDATE files SET blocked_reason = 'no_space' WHERE size = 5")  # a full disk holds it back
    response = await client.get("/api/admin/stats/queue", headers=admin.headers)
    assert await response.json() == {"waiting": 2, "claimed": 1, "blocked": 1}


@pytest.mark.parametrize(
    "path", ["/api/admin/stats/files", "/api/admin/stats/uploads/daily", "/api/admin/db", "/api/admin/stats/queue"]
)
async def test_admin_endpoints_refuse_others(client, user, path: str) -> None:
    forbidden = await client.get(path, headers=user.headers)
    assert forbidden.status == 403 and (await forbidden.json())["code"] == "FORBIDDEN"
    anonymous = await client.get(path)
    assert anonymous.status == 401 and (await anonymous.json())["code"] == "UNAUTHORIZED"
