"""Settings: declared once, read from the environment and .env, bad values refused in one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service import db
from service.config import SETTINGS, ConfigError, load_settings
from tests.support import ROOT, make_settings

DESIGN_NAMES = {
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "DATABASE_POOL_TIMEOUT",
    "DATABASE_POOL_IDLE_TIMEOUT",
    "STORAGE_DIR",
    "JWT_SECRET",
    "ACCESS_TOKEN_TTL",
    "REFRESH_TOKEN_TTL",
    "MAX_UPLOAD_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "UPLOAD_EXPIRY",
    "WORKER_CONCURRENCY",
    "SLOW_REQUEST_MS",
    "HOST",
    "PORT",
}


def test_every_design_setting_is_declared_and_documented() -> None:
    declared = {s.env for s in SETTINGS}
    assert declared >= DESIGN_NAMES
    readme = (ROOT / "README.md").read_text()
    for s in SETTINGS:
        assert s.help, s.env
        assert f"`{s.env}`" in readme, f"{s.env} missing from README"


def test_defaults_match_the_design() -> None:
    s = load_settings({}, dotenv=None)
    assert (s.db_pool_size, s.db_pool_timeout_ms, s.db_pool_idle_timeout_ms) == (10, 20000, 10000)
    assert (s.slow_request_ms, s.port, s.storage_dir) == (1000, 8080, "./storage")
    assert s.default_chunk_size == 8 * 1024 * 1024
    assert s.upload_expiry == 24 * 3600


def test_units_are_understood() -> None:
    s = load_settings({"MAX_UPLOAD_SIZE": "2G", "DEFAULT_CHUNK_SIZE": "512k", "UPLOAD_EXPIRY": "90m"}, dotenv=None)
    assert (s.max_upload_size, s.default_chunk_size, s.upload_expiry) == (2 * 1024**3, 512 * 1024, 5400)
    # one rule for both: a decimal number, then a unit (optional for sizes: bytes)
    s = load_settings(
        {"MAX_UPLOAD_SIZE": "1.5GiB", "DEFAULT_CHUNK_SIZE": "1048576", "UPLOAD_EXPIRY": "1.5h", "WORKER_LEASE": "45 s"},
        dotenv=None,
    )
    assert (s.max_upload_size, s.default_chunk_size, s.upload_expiry, s.worker_lease) == (
        int(1.5 * 1024**3),
        1048576,
        5400,
        45,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DATABASE_POOL_SIZE": "ten"}, "DATABASE_POOL_SIZE: expected an integer, got 'ten'"),
        ({"DATABASE_POOL_SIZE": "0"}, "DATABASE_POOL_SIZE: must be at least 1"),
        ({"PORT": "70000"}, "PORT: must be at least 0 and at most 65535, got 70000"),
        ({"MAX_UPLOAD_SIZE": "lots"}, "MAX_UPLOAD_SIZE: expected a size"),
        ({"UPLOAD_EXPIRY": "-5"}, "UPLOAD_EXPIRY: expected a positive duration"),
        ({"UPLOAD_EXPIRY": "24"}, "UPLOAD_EXPIRY: expected a positive duration with a unit, such as 900s"),
        ({"UPLOAD_EXPIRY": "0s"}, "UPLOAD_EXPIRY: expected a positive duration"),
        ({"UPLOAD_EXPIRY": "1e3s"}, "UPLOAD_EXPIRY: expected a positive duration"),
        ({"MAX_UPLOAD_SIZE": "1e9"}, "MAX_UPLOAD_SIZE: expected a size"),
        ({"MAX_UPLOAD_SIZE": "-1G"}, "MAX_UPLOAD_SIZE: expected a size"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL: must be a postgresql:// URL"),
        (
            {"DEFAULT_CHUNK_SIZE": "10M", "MAX_CHUNK_SIZE": "1M"},
            "DEFAULT_CHUNK_SIZE: 10485760 is larger than MAX_CHUNK_SIZE",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env, dotenv=None)
    assert str(e.value).startswith(message)


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# comment\nPORT=9001\nSLOW_REQUEST_MS='250'\nexport HOST=0.0.0.0\n")
    s = load_settings({"PORT": "9002"}, dotenv=tmp_path / ".env")
    assert (s.port, s.slow_request_ms, s.host) == (9002, 250, "0.0.0.0")


def test_bad_config_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_POOL_TIMEOUT": "soon"}
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr == "chunkd: DATABASE_POOL_TIMEOUT: expected an integer, got 'soon'\n"
    assert "Traceback" not in result.stdout + result.stderr


async def test_pool_settings_drive_the_pool(database_url: str, storage_dir: Path) -> None:
    settings = make_settings(
        database_url,
        storage_dir,
        DATABASE_POOL_SIZE="2",
        DATABASE_POOL_TIMEOUT="300",
        DATABASE_POOL_IDLE_TIMEOUT="4000",
    )
    pool = await db.create_pool(settings)
    try:
        assert pool.get_max_size() == 2
        held = [await pool.acquire(), await pool.acquire()]
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await pool.acquire()  # both connections taken: gives up after DATABASE_POOL_TIMEOUT
        assert 0.25 < time.monotonic() - started < 2
        for conn in held:
            await pool.release(conn)
        assert pool._max_inactive_connection_lifetime == 4.0
    finally:
        await pool.close()
