"""Helpers the tests share: settings, scratch directories, a real chunkd process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "test-secret-" + "x" * 32


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def scratch_dir(prefix: str) -> Path:
    """A directory the unprivileged PostgreSQL user can reach (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir()))
    path.chmod(0o755)
    return path


def make_settings(database_url: str, storage_dir: Path, **env: str) -> Settings:
    return load_settings({"DATABASE_URL": database_url, "STORAGE_DIR": str(storage_dir),
                          "JWT_SECRET": JWT_SECRET, **env}, dotenv=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChunkdProcess:
    """`python -m service <command>` as a real process, for end-to-end and crash tests."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = int(env.get("PORT", 0)) or free_port()
        self.env = {**os.environ, "PORT": str(self.port), "PYTHONUNBUFFERED": "1", **env}
        self.args = args
        self.log = tempfile.NamedTemporaryFile(prefix="chunkd-proc-", suffix=".log", delete=False)  # noqa: SIM115 - closed by the fixture
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_path: str | None = "/healthz", timeout: float = 30) -> ChunkdProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "service", *self.args], env=self.env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        if wait_path:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"chunkd exited early:\n{self.output()}")
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.05)
            else:
                raise RuntimeError(f"chunkd did not listen within {timeout}s:\n{self.output()}")
        return self

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


async def insert_file(conn, owner_id: str, *, status: str = "COMPLETED", post_id: str | None = None,  # type: ignore[no-untyped-def]
                      name: str = "photo.jpg", size: int = 1234, created_at: str | None = None) -> dict:
    """A files row made directly in SQL, as the worker would leave it; returns id, filename and path."""
    from service.storage import blob_key, new_blob_name
    filename = new_blob_name()
    row = await conn.fetchrow(
        "INSERT INTO files (original_name, filename, mimetype, size, type, status, path, uploaded_by_id, post_id,"
        " chunk_size, created_at) VALUES ($1, $2, 'image/jpeg', $3, 'IMAGE', $4, $5, $6, $7, 1048576,"
        " COALESCE($8::timestamptz, now())) RETURNING id, filename, path",
        name, filename, size, status, blob_key(filename), owner_id, post_id, created_at)
    return dict(row)


async def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(await response.text()) for s in family.samples}


# A test marked with this runs twice: blobs in the local STORAGE_DIR, then in a bucket of the suite's Ceph RGW.
on_both_stores = pytest.mark.parametrize("storage_env", ["local", "s3"], indirect=True)


async def stored_keys(settings: Settings) -> set[str]:
    """Every committed object of the blob areas in the configured store, and every unfinished write (as its
    label): what a test compares with what it expects the store to hold."""
    from service import storage
    store = storage.from_settings(settings)
    try:
        keys = {info.key for area in storage.AREAS async for info in store.objects(area + "/")}
        return keys | {w.label for area in storage.AREAS for w in await store.unfinished(area + "/")}
    finally:
        await store.close()
