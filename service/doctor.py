"""`chunkd doctor`: is everything chunkd needs in place? One line per check."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from service import db, embedded, migrate, storage
from service.config import Settings
from service.storage import StorageError
from service.store import server


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True

    def line(self) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.required else "warn")
        return f"{mark} {self.name}: {self.detail}"


async def run_checks(settings: Settings) -> list[Check]:
    checks = [await check_storage(settings), check_libmagic()]
    try:
        conn = await db.connect(settings)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        return [Check("database", False, f"cannot connect: {e}"), *checks]
    try:
        version, major = await server.get_server_version(conn)
        checks.insert(
            0,
            Check(
                "database", major >= 15, f"PostgreSQL {version}" + ("" if major >= 15 else " (15 or newer required)")
            ),
        )
        state = await migrate.status(conn)
        problems = [f"changed after apply: {', '.join(state.changed)}"] if state.changed else []
        problems += [f"pending: {', '.join(m.path.name for m in state.pending)}"] if state.pending else []
        checks.insert(
            1, Check("migrations", not problems, "; ".join(problems) or f"{len(state.applied)} applied, none pending")
        )
        checks.append(await check_pg_stat_statements(conn))
        checks.append(await check_settings(conn))
    finally:
        await conn.close()
    return checks


async def check_storage(settings: Settings) -> Check:
    """The configured store accepts a put, a get and a delete (and, for a bucket, exists)."""
    try:
        return Check("storage", True, await storage.check(settings))
    except StorageError as e:
        return Check("storage", False, str(e))


def check_libmagic() -> Check:
    try:
        import magic

        kind = magic.from_buffer(b"%PDF-1.4\n", mime=True)
    except Exception as e:  # ImportError, or libmagic.so missing / unusable
        return Check("libmagic", False, f"unusable: {e}")
    return Check("libmagic", kind == "application/pdf", f"detects content (PDF -> {kind})")


async def check_pg_stat_statements(conn: asyncpg.Connection) -> Check:
    installed = await server.get_extension_version(conn, "pg_stat_statements")
    if installed:
        return Check("pg_stat_statements", True, f"installed ({installed})", required=False)
    available = await server.get_extension_available(conn, "pg_stat_statements")
    detail = (
        "available but not installed: CREATE EXTENSION pg_stat_statements (needs shared_preload_libraries)"
        if available
        else "not available: slow-query stats are off"
    )
    return Check("pg_stat_statements", False, detail, required=False)


# pg_settings gives a size in its unit (8kB pages, MB) and a time in ms, s or min.
_UNITS = {
    "B": 1,
    "kB": 1024,
    "8kB": 8192,
    "16kB": 16384,
    "MB": 1024**2,
    "GB": 1024**3,
    "TB": 1024**4,
    "ms": 0.001,
    "s": 1,
    "min": 60,
    "h": 3600,
    "d": 86400,
}


def _amount(value: str) -> float:
    """'8GB', '30min', '64MB' as bytes or seconds."""
    number = value.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return float(number) * _UNITS.get(value[len(number) :] or "B", 1)


async def check_settings(conn: asyncpg.Connection) -> Check:
    """The workload settings the embedded PostgreSQL runs with (embedded.workload_settings), against the
    server's: each one below them, and what that costs. Advice only: chunkd works on stock settings."""
    wanted = embedded.workload_settings()
    found = await server.list_settings(conn, [s.name for s in wanted])
    short = []
    for s in wanted:
        if s.name not in found:
            continue
        setting, unit = found[s.name]
        have = float(setting) * _UNITS.get(unit or "B", 1)
        if have < _amount(s.value):
            shown = f"{setting}{unit or ''}"
            short.append(f"{s.name} is {shown}, chunkd's workload wants {s.value}: {s.cost}")
    if not short:
        return Check(
            "postgresql settings", True, "WAL, checkpoint and buffer settings suit chunk uploads", required=False
        )
    return Check("postgresql settings", False, "; ".join(short), required=False)
