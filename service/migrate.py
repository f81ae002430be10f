"""Numbered plain-SQL migrations from sql/, each applied once, in one transaction, and recorded.

A migration that has been applied is never edited: its checksum is kept in
schema_migrations and a changed file is refused. Deploys from several processes
at once serialise on an advisory lock, so each file runs exactly once.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from service.store import migrations as store


def _sql_dir() -> Path:
    """sql/ beside the package in a checkout; share/chunkd/sql where a wheel installed it."""
    checkout = Path(__file__).resolve().parent.parent / "sql"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "chunkd" / "sql"


SQL_DIR = _sql_dir()
NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """A migration cannot be applied; the message says which and why."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Status:
    applied: list[str]
    pending: list[Migration]
    changed: list[str]  # applied, but the file on disk differs
    missing: list[str]  # applied, but no file on disk


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_short_description.sql")
        migrations.append(Migration(match[1], match[2], path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a number")
    return migrations


async def status(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> Status:
    rows = await store.list_applied(conn)
    on_disk = discover(sql_dir)
    files = {m.version: m for m in on_disk}
    return Status(
        applied=sorted(rows),
        pending=[m for m in on_disk if m.version not in rows],
        changed=[f"{v}_{files[v].name}" for v in sorted(rows) if v in files and files[v].checksum != rows[v]],
        missing=[v for v in sorted(rows) if v not in files],
    )


async def deploy(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Apply every pending migration; returns those applied by this call."""
    await store.lock(conn)
    try:
        state = await status(conn, sql_dir)
        if state.changed:
            raise MigrationError(
                f"migration {', '.join(state.changed)} was changed after it was applied; "
                "migrations are never edited: add a new one instead"
            )
        applied = []
        for migration in state.pending:
            async with conn.transaction():
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as e:
                    raise MigrationError(f"{migration.path.name}: {e}") from None
                await store.insert_applied(conn, migration.version, migration.name, migration.checksum)
            applied.append(migration)
        return applied
    finally:
        await store.unlock(conn)


async def reset(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Drop everything in the public schema, then deploy from scratch. Development only."""
    await store.lock(conn)
    try:
        await store.drop_public_schema(conn)
    finally:
        await store.unlock(conn)
    return await deploy(conn, sql_dir)


def new(name: str, sql_dir: Path = SQL_DIR) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise MigrationError("a migration needs a name of letters or digits")
    existing = discover(sql_dir)
    number = int(existing[-1].version) + 1 if existing else 1
    path = sql_dir / f"{number:04d}_{slug}.sql"
    path.write_text(f"-- {number:04d} {slug}: describe why this change is needed.\n")
    return path
