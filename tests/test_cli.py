"""The `chunkd` command as a user runs it: a real process against this test's database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.support import JWT_SECRET, ROOT, insert_user


def chunkd(database_url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "service", *args], env=env, cwd=cwd or ROOT, capture_output=True, text=True, timeout=120
    )


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "service", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.startswith("chunkd ")


async def test_migrate_deploy_status_and_reset(empty_database_url: str) -> None:
    status = chunkd(empty_database_url, "migrate", "status")
    assert "pending  0001_initial_schema.sql" in status.stdout
    deploy = chunkd(empty_database_url, "migrate", "deploy")
    assert deploy.returncode == 0 and "applied  0001_initial_schema.sql" in deploy.stdout
    again = chunkd(empty_database_url, "migrate", "deploy")
    assert again.stdout.strip() == "nothing to apply: up to date"
    refused = chunkd(empty_database_url, "migrate", "reset")
    assert refused.returncode == 2 and "--force" in refused.stderr
    conn = await asyncpg.connect(empty_database_url)
    try:
        await insert_user(conn, email="keep@example.com")
        assert await conn.fetchval("SELECT count(*) FROM users") == 1  # refused reset kept the data
        forced = chunkd(empty_database_url, "migrate", "reset", "--force")
        assert forced.returncode == 0
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
    finally:
        await conn.close()


def test_seed_command_is_idempotent(database_url: str) -> None:
    first = chunkd(database_url, "seed")
    assert first.returncode == 0 and "15 new posts" in first.stdout
    second = chunkd(database_url, "seed")
    assert second.returncode == 0 and "0 new posts" in second.stdout


def test_doctor_passes_on_a_migrated_database(database_url: str, tmp_path: Path) -> None:
    result = chunkd(database_url, "doctor", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok   database: PostgreSQL ")
    assert any(line.startswith("ok   migrations:") for line in lines)
    assert any(line.startswith("ok   libmagic:") for line in lines)
    assert any("pg_stat_statements" in line for line in lines)


async def test_doctor_names_the_settings_that_cost(database_url: str, tmp_path: Path) -> None:
    """An external database below the workload's settings gets a warning naming each and its cost; the
    command still passes (advice, not a requirement)."""
    conn = await asyncpg.connect(database_url)
    try:
        max_wal_mb = int(await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'max_wal_size'"))
    finally:
        await conn.close()
    result = chunkd(database_url, "doctor", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    line = next(line for line in result.stdout.splitlines() if "postgresql settings:" in line)
    if max_wal_mb < 8 * 1024:  # the suite's own server runs on stock WAL settings
        assert line.startswith("warn postgresql settings:") and f"max_wal_size is {max_wal_mb}MB" in line
        assert "full-page image" in line
    else:
        assert "max_wal_size" not in line


def test_doctor_fails_on_pending_migrations(empty_database_url: str, tmp_path: Path) -> None:
    result = chunkd(empty_database_url, "doctor", cwd=tmp_path)
    assert result.returncode == 1
    assert "FAIL migrations: pending: 0001_initial_schema.sql" in result.stdout


def test_doctor_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    result = chunkd("postgresql://nobody@127.0.0.1:1/nothing", "doctor", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL database: cannot connect")


def serve(database_url: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`chunkd serve` that is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT), "JWT_SECRET": JWT_SECRET, **env},
    )


def test_serve_refuses_a_bad_host_in_one_line(database_url: str, tmp_path: Path) -> None:
    result = serve(database_url, tmp_path, HOST="0.0.0.0.0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("chunkd: HOST: cannot listen on '0.0.0.0.0'")
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_refuses_a_port_in_use_in_one_line(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(database_url, tmp_path, PORT=str(port))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"chunkd: PORT: 127.0.0.1:{port} is already in use")
    assert "worker" not in result.stdout  # refused before anything started


def test_serve_refuses_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = serve(f"postgresql://nobody@127.0.0.1:{port}/nothing", tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("chunkd: DATABASE_URL: cannot connect to the database")
