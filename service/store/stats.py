"""Admin aggregates and database health: the database does the counting."""
from __future__ import annotations

from typing import Any

import asyncpg

# The seed's getFileStatistics (Prisma groupBy type, status with _count, _sum, _avg);
# averageSize is Math.round(avg), i.e. halves round up: floor(x + 0.5).
FILE_STATISTICS = """
SELECT type::text, status::text, count(*) AS count, sum(size)::bigint AS total_size,
       floor(avg(size) + 0.5)::bigint AS average_size
  FROM files
 GROUP BY type, status
 ORDER BY type, status
"""


async def file_statistics(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(FILE_STATISTICS)]


# The seed's getCustomAnalytics over $1 UTC days ending today, oldest first. Days without uploads are
# present with zeros (generate_series), so a chart needs no gap filling.
DAILY_UPLOADS = """
WITH bounds AS (
    SELECT (now() AT TIME ZONE 'UTC')::date AS today,
           (now() AT TIME ZONE 'UTC')::date - ($1::int - 1) AS first_day
), per_day AS (
    SELECT (f.created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS uploads, sum(f.size) AS total_size
      FROM files f, bounds b
     WHERE f.created_at >= b.first_day::timestamp AT TIME ZONE 'UTC'
     GROUP BY 1
)
SELECT d::date AS date, coalesce(p.uploads, 0) AS uploads, coalesce(p.total_size, 0)::bigint AS total_size
  FROM bounds b
 CROSS JOIN generate_series(b.first_day, b.today, interval '1 day') AS d
  LEFT JOIN per_day p ON p.day = d::date
 ORDER BY d
"""


async def daily_uploads(conn: asyncpg.Connection, days: int) -> list[dict[str, Any]]:
    return [{"date": r["date"].isoformat(), "uploads": r["uploads"], "total_size": r["total_size"]}
            for r in await conn.fetch(DAILY_UPLOADS, days)]
