"""Migrations: deploy, re-deploy, concurrency, refusal of edited files, and the schema in the catalog."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from service import migrate
from tests.support import insert_chunk, insert_file, insert_user

SEED_TABLES = {"users", "posts", "files", "file_chunks", "user_preferences"}
SEED_ENUMS = {
    "user_role": ["USER", "ADMIN"],
    "file_type": ["IMAGE", "DOCUMENT", "VIDEO", "AUDIO", "OTHER"],
    "file_status": ["UPLOADING", "PROCESSING", "COMPLETED", "FAILED"],
}
# (table, column) -> (referenced table, ON DELETE): the seed's rules (docs/architecture.md) plus the file_chunks cascade.
SEED_FOREIGN_KEYS = {
    ("posts", "author_id"): ("users", "CASCADE"),
    ("files", "uploaded_by_id"): ("users", "CASCADE"),
    ("files", "post_id"): ("posts", "SET NULL"),
    ("file_chunks", "file_id"): ("files", "CASCADE"),
    ("user_preferences", "user_id"): ("users", "CASCADE"),
}
# The seed's "Indexing Strategy", each with its columns and (for partial ones) its predicate.
SEED_INDEXES = {
    "idx_users_email": ("users", "(email)", None),
    "idx_users_role": ("users", "(role)", None),
    "idx_posts_author_id": ("posts", "(author_id)", None),
    "idx_posts_published": ("posts", "(published)", None),
    "idx_files_uploaded_by_id": ("files", "(uploaded_by_id)", None),
    "idx_files_type_status": ("files", "(type, status)", None),
    "idx_files_created_at": ("files", "(created_at)", None),
    "idx_posts_author_published": ("posts", "(author_id, published)", None),
    "idx_files_user_type": ("files", "(uploaded_by_id, type)", None),
    "idx_active_users": ("users", "(id)", "(is_active = true)"),
    "idx_completed_files": ("files", "(id)", "(status = 'COMPLETED'::file_status)"),
    "user_preferences_user_id_key": ("user_preferences", "(user_id)", None),
}


async def test_deploy_applies_everything_once(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        applied = await migrate.deploy(conn)
        assert [m.path.name for m in applied] == [m.path.name for m in migrate.discover()]
        assert await migrate.deploy(conn) == []  # re-deploy: nothing to do
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["checksum"]) for r in rows] == [(m.version, m.checksum) for m in migrate.discover()]
        state = await migrate.status(conn)
        assert state.pending == [] and state.changed == []
    finally:
        await conn.close()


async def test_two_concurrent_deploys_apply_each_migration_once(empty_database_url: str) -> None:
    a, b = await asyncpg.connect(empty_database_url), await asyncpg.connect(empty_database_url)
    try:
        first, second = await asyncio.gather(migrate.deploy(a), migrate.deploy(b))
        names = sorted(m.path.name for m in first + second)
        assert names == sorted(m.path.name for m in migrate.discover())  # each exactly once, no error
        assert await a.fetchval("SELECT count(*) FROM schema_migrations") == len(names)
    finally:
        await a.close()
        await b.close()


async def test_edited_migration_is_refused(empty_database_url: str, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(migrate.SQL_DIR, sql_dir)
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate.deploy(conn, sql_dir)
        first = sorted(sql_dir.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(migrate.MigrationError, match=r"0001_initial_schema was changed after it was applied"):
            await migrate.deploy(conn, sql_dir)
        assert (await migrate.status(conn, sql_dir)).changed == ["0001_initial_schema"]
    finally:
        await conn.close()


async def test_failed_migration_leaves_nothing_behind(empty_database_url: str, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(migrate.SQL_DIR, sql_dir)
    (sql_dir / "0099_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT no_such_function();\n")
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(migrate.MigrationError, match=r"0099_broken\.sql"):
            await migrate.deploy(conn, sql_dir)
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert "0099" not in (await migrate.status(conn, sql_dir)).applied
    finally:
        await conn.close()


async def test_reset_rebuilds_an_empty_schema(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await insert_user(conn)
        await migrate.reset(conn)
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
        assert (await migrate.status(conn)).pending == []
    finally:
        await conn.close()


def test_new_numbers_the_next_file(tmp_path: Path) -> None:
    shutil.copytree(migrate.SQL_DIR, tmp_path / "sql")
    path = migrate.new("Add Avatars!", tmp_path / "sql")
    last = migrate.discover()[-1]
    assert path.name == f"{int(last.version) + 1:04d}_add_avatars.sql"
    assert migrate.discover(tmp_path / "sql")[-1].path == path


async def test_schema_has_the_seed_tables_and_enums(conn: asyncpg.Connection) -> None:
    tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables >= SEED_TABLES
    for enum, labels in SEED_ENUMS.items():
        rows = await conn.fetch(
            """SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
                                    WHERE t.typname = $1 ORDER BY e.enumsortorder""",
            enum,
        )
        assert [r["enumlabel"] for r in rows] == labels


async def test_schema_foreign_keys_and_their_on_delete(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("""
        SELECT c.conrelid::regclass::text AS tbl, a.attname AS col, c.confrelid::regclass::text AS ref,
               CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL'
                                  WHEN 'a' THEN 'NO ACTION' WHEN 'r' THEN 'RESTRICT' END AS on_delete
          FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
         WHERE c.contype = 'f'""")
    found = {(r["tbl"], r["col"]): (r["ref"], r["on_delete"]) for r in rows}
    for key, expected in SEED_FOREIGN_KEYS.items():
        assert found.get(key) == expected, key


async def test_schema_has_every_seed_index(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("SELECT indexname, tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    found = {r["indexname"]: (r["tablename"], r["indexdef"]) for r in rows}
    for name, (table, columns, predicate) in SEED_INDEXES.items():
        assert name in found, name
        assert found[name][0] == table
        definition = found[name][1]
        assert f"USING btree {columns}" in definition, definition
        if predicate:
            assert definition.endswith(f"WHERE {predicate}"), definition
        else:
            assert "WHERE" not in definition


async def test_schema_improvements_over_the_seed(conn: asyncpg.Connection) -> None:
    # timestamptz everywhere
    plain = await conn.fetch("""SELECT table_name, column_name FROM information_schema.columns
                                 WHERE table_schema = 'public' AND data_type = 'timestamp without time zone'""")
    assert plain == []
    # chunk data is stored uncompressed out of line
    assert (
        await conn.fetchval("""SELECT attstorage FROM pg_attribute
                                   WHERE attrelid = 'file_chunks'::regclass AND attname = 'data'""")
        == b"e"
    )
    # updated_at is kept by the database
    user_id = (await insert_user(conn)).id
    before = await conn.fetchval("SELECT updated_at FROM users WHERE id = $1", user_id)
    await asyncio.sleep(0.01)
    await conn.execute("UPDATE users SET name = 'T' WHERE id = $1", user_id)
    assert await conn.fetchval("SELECT updated_at FROM users WHERE id = $1", user_id) > before
    # deleting a file removes its chunks
    file_id = (await insert_file(conn, user_id, status="UPLOADING", size=1, chunk_size=1))["id"]
    await insert_chunk(conn, file_id, 0, b"a")
    await conn.execute("DELETE FROM files WHERE id = $1", file_id)
    assert await conn.fetchval("SELECT count(*) FROM file_chunks") == 0


async def test_preferences_data_migration_backfills_existing_users(empty_database_url: str, tmp_path: Path) -> None:
    """Users created before 0002 get default preferences when it runs."""
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    shutil.copy(migrate.SQL_DIR / "0001_initial_schema.sql", sql_dir)
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate.deploy(conn, sql_dir)
        await conn.execute("INSERT INTO users (email, password) VALUES ('a@example.com', 'x'), ('b@example.com', 'y')")
        shutil.copy(migrate.SQL_DIR / "0002_add_user_preferences.sql", sql_dir)
        await migrate.deploy(conn, sql_dir)
        rows = await conn.fetch("SELECT theme, language, notifications FROM user_preferences")
        assert [tuple(r) for r in rows] == [("light", "en", True)] * 2
    finally:
        await conn.close()
