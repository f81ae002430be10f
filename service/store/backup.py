"""backup: what a backup archive holds, read in the snapshot pg_dump uses; what a restore target holds."""

from __future__ import annotations

import asyncpg

from service.store import migrations, server

# Before the snapshot (LOCK takes none): a finished file's chunks go by TRUNCATE of their slot
# (sql/0217), which a snapshot older than it would see as no chunks at all; with this lock held, the
# worker deletes them instead until the dump is done.
LOCK_CHUNKS = "LOCK TABLE file_chunks IN ACCESS SHARE MODE"
EXPORT_SNAPSHOT = "SELECT pg_export_snapshot()"


async def export_snapshot(conn: asyncpg.Connection) -> str:
    """Called in a REPEATABLE READ transaction kept open while pg_dump --snapshot reads the same data."""
    await conn.execute(LOCK_CHUNKS)
    return await conn.fetchval(EXPORT_SNAPSHOT)


LIST_REFERENCED_FILENAMES = "SELECT filename FROM files"


async def list_referenced_filenames(conn: asyncpg.Connection) -> set[str]:
    return {r["filename"] for r in await conn.fetch(LIST_REFERENCED_FILENAMES)}


# Relations outside the system schemas, except those an extension owns (pg_stat_statements' views).
LIST_USER_RELATIONS = """
SELECT n.nspname || '.' || c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
   AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 1
"""


async def list_user_relations(conn: asyncpg.Connection) -> list[str]:
    return [r["name"] for r in await conn.fetch(LIST_USER_RELATIONS)]


async def drop_public_schema(conn: asyncpg.Connection) -> None:
    """restore --force: everything in public goes (as `migrate reset`), pg_stat_statements comes back."""
    keep_stat_statements = await server.get_extension_version(conn, "pg_stat_statements") is not None
    await migrations.drop_public_schema(conn)
    if keep_stat_statements:
        await server.create_stat_statements(conn)
