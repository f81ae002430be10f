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


async def list_file_statistics(conn: asyncpg.Connection) -> list[dict[str, Any]]:
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


async def list_daily_uploads(conn: asyncpg.Connection, days: int) -> list[dict[str, Any]]:
    return [
        {"date": r["date"].isoformat(), "uploads": r["uploads"], "total_size": r["total_size"]}
        for r in await conn.fetch(DAILY_UPLOADS, days)
    ]


# The seed's DatabaseHealthService.getConnectionInfo. Without pg_read_all_stats, other roles'
# sessions count in total but show no state.
CONNECTION_COUNTS = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE state = 'idle') AS idle
  FROM pg_stat_activity
 WHERE datname = current_database()
"""


async def get_connection_counts(conn: asyncpg.Connection) -> dict[str, int]:
    return dict(await conn.fetchrow(CONNECTION_COUNTS))


DATABASE_SIZE = """
SELECT current_database() AS name, pg_size_pretty(pg_database_size(current_database())) AS size,
       pg_database_size(current_database()) AS size_bytes
"""


async def get_database_size(conn: asyncpg.Connection) -> dict[str, Any]:
    return dict(await conn.fetchrow(DATABASE_SIZE))


# table_bytes includes TOAST, where file_chunks.data lives. Dead rows are counted in the table and in
# its TOAST table (a deleted chunk leaves one dead row and ~chunk_size/2000 dead TOAST rows); the space
# they hold is reused once vacuumed, not returned to the OS: reclaimable_bytes estimates it as each
# relation's size times its dead share (the statistics' counts, not a scan). A partitioned table
# (file_chunks' slots, sql/0217) is one line, the sum of its partitions.
TABLE_SIZES = """
SELECT s.schemaname AS schema, r.relname AS name, sum(s.n_live_tup)::bigint AS rows,
       sum(s.n_dead_tup)::bigint AS dead_rows, coalesce(sum(t.n_live_tup), 0)::bigint AS toast_rows,
       coalesce(sum(t.n_dead_tup), 0)::bigint AS toast_dead_rows,
       sum(pg_total_relation_size(s.relid))::bigint AS total_bytes,
       pg_size_pretty(sum(pg_total_relation_size(s.relid))) AS total_size,
       sum(pg_table_size(s.relid))::bigint AS table_bytes, sum(pg_indexes_size(s.relid))::bigint AS index_bytes,
       sum(pg_relation_size(s.relid) * s.n_dead_tup / greatest(s.n_live_tup + s.n_dead_tup, 1)
           + coalesce(pg_relation_size(c.reltoastrelid) * t.n_dead_tup / greatest(t.n_live_tup + t.n_dead_tup, 1), 0)
       )::bigint AS reclaimable_bytes,
       to_json(max(greatest(s.last_vacuum, s.last_autovacuum))) #>> '{}' AS last_vacuum
  FROM pg_stat_user_tables s
  JOIN pg_class c ON c.oid = s.relid
  JOIN pg_class r ON r.oid = coalesce(pg_partition_root(s.relid), s.relid)
  LEFT JOIN pg_stat_all_tables t ON t.relid = c.reltoastrelid
 GROUP BY s.schemaname, r.relname
 ORDER BY total_bytes DESC, schema, name
"""


async def list_table_sizes(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(TABLE_SIZES)]


INDEX_USAGE = """
SELECT schemaname AS schema, relname AS table, indexrelname AS name, idx_scan AS scans,
       idx_tup_read AS tuples_read, idx_tup_fetch AS tuples_fetched,
       pg_relation_size(indexrelid) AS size_bytes, pg_size_pretty(pg_relation_size(indexrelid)) AS size
  FROM pg_stat_user_indexes
 ORDER BY idx_scan DESC, schemaname, relname, indexrelname
"""


async def list_index_usage(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(INDEX_USAGE)]


STAT_STATEMENTS_STATE = """
SELECT (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements') AS installed,
       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements') AS available
"""

# mean_exec_time: PostgreSQL 13+ (chunkd needs 15). Only this database's statements.
SLOWEST_STATEMENTS = """
SELECT query, calls, round(mean_exec_time::numeric, 3)::float8 AS mean_ms,
       round(total_exec_time::numeric, 3)::float8 AS total_ms, rows
  FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY mean_exec_time DESC
 LIMIT $1
"""


async def list_slowest_statements(
    conn: asyncpg.Connection, limit: int
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The statements with the highest mean time, or None and the reason they cannot be read."""
    state = await conn.fetchrow(STAT_STATEMENTS_STATE)
    if state["installed"] is None:
        if not state["available"]:
            return None, "pg_stat_statements is not available on this server (the contrib package is missing)"
        return None, (
            "pg_stat_statements is not installed in this database: CREATE EXTENSION pg_stat_statements "
            "(the server must also have it in shared_preload_libraries)"
        )
    try:
        return [dict(r) for r in await conn.fetch(SLOWEST_STATEMENTS, limit)], None
    except asyncpg.PostgresError as e:  # installed but not preloaded, or not readable by this role
        return None, f"pg_stat_statements is installed but cannot be read: {e}"


# Two counts, so each can use its partial index (idx_files_processing_queue, idx_files_worker_id)
# instead of scanning files on every scrape.
QUEUE_DEPTH = """
SELECT (SELECT count(*) FROM files WHERE status = 'PROCESSING' AND worker_id IS NULL) AS waiting,
       (SELECT count(*) FROM files WHERE status = 'PROCESSING' AND worker_id IS NOT NULL) AS claimed,
       (SELECT count(*) FROM files WHERE status = 'PROCESSING' AND blocked_reason IS NOT NULL) AS blocked
"""


async def get_queue_depth(conn: asyncpg.Connection) -> dict[str, int]:
    return dict(await conn.fetchrow(QUEUE_DEPTH))


PROCESSING_BLOCKED = """
SELECT blocked_reason, count(*) FROM files
 WHERE status = 'PROCESSING' AND blocked_reason IS NOT NULL
 GROUP BY blocked_reason
"""


async def get_processing_blocked(conn: asyncpg.Connection) -> dict[str, int]:
    """Files its environment holds back, by reason (chunkd_processing_blocked)."""
    return {r[0]: r[1] for r in await conn.fetch(PROCESSING_BLOCKED)}
