"""What the tests share, and the one place test data is made: settings, scratch directories, a real
chunkd process, factories of rows (users, files, chunks), and a raw HTTP/1.1 request over a socket.
Fixtures live in conftest.py; this module has none."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import storage
from service.auth import hash_password, issue_access_token, new_session_secret
from service.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "test-secret-" + "x" * 32
# Durability buys nothing in a throwaway cluster; it costs seconds per test run.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "300"}


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def scratch_dir(prefix: str) -> Path:
    """A directory the unprivileged PostgreSQL user can reach (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir()))
    path.chmod(0o755)
    return path


def make_settings(database_url: str, storage_dir: Path, **env: str) -> Settings:
    return load_settings(
        {"DATABASE_URL": database_url, "STORAGE_DIR": str(storage_dir), "JWT_SECRET": JWT_SECRET, **env}, dotenv=None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChunkdProcess:
    """`python -m service <command>` as a real process, for end-to-end and crash tests."""

    def __init__(self, env: dict[str, str], *args: str, cwd: Path = ROOT) -> None:
        self.port = int(env.get("PORT", 0)) or free_port()
        self.cwd = cwd  # another checkout's `service` package (a benchmark's before/after)
        self.env = {**os.environ, "PORT": str(self.port), "PYTHONUNBUFFERED": "1", **env}
        self.args, self.cwd = args, cwd
        self.log = tempfile.NamedTemporaryFile(prefix="chunkd-proc-", suffix=".log", delete=False)  # noqa: SIM115 - closed by the fixture
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_path: str | None = "/healthz", timeout: float = 30) -> ChunkdProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", *self.args],
            env=self.env,
            cwd=self.cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
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


# factories ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    """A user row made directly in the database, with a valid access token."""

    id: str
    email: str
    password: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@functools.cache
def _hashed(password: str) -> str:
    """argon2 is slow on purpose: one hash per distinct password per test process."""
    return hash_password(password)


async def insert_user(
    conn: asyncpg.Connection,
    settings: Settings | None = None,
    *,
    role: str = "USER",
    email: str | None = None,
    password: str = "correct horse",
    name: str | None = None,
    is_active: bool = True,
) -> User:
    """A users row; its token is signed with `settings` (the app's), or with the suite's JWT_SECRET."""
    email = email or f"{uuid.uuid4().hex[:10]}@example.com"
    user_id = await conn.fetchval(
        "INSERT INTO users (email, password, name, role, is_active) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        email,
        _hashed(password),
        name or email.split("@")[0],
        role,
        is_active,
    )
    token = await session_token(conn, settings or _token_settings(), user_id, role)
    return User(user_id, email, password, role, token)


@functools.cache
def _token_settings() -> Settings:
    return load_settings({"JWT_SECRET": JWT_SECRET}, dotenv=None)


async def insert_file(
    conn: asyncpg.Connection,
    owner_id: str,
    *,
    status: str = "COMPLETED",
    name: str = "photo.jpg",
    mimetype: str = "image/jpeg",
    type: str = "IMAGE",
    size: int = 1234,
    chunk_size: int = 1048576,
    post_id: str | None = None,
    sha256: str | None = None,
    metadata: dict[str, Any] | None = None,
    filename: str | None = None,
    created_at: datetime | str | None = None,
    expires_at: datetime | None = None,
    worker_id: str | None = None,
    claimed_at: datetime | None = None,
) -> dict[str, Any]:
    """A files row made directly in SQL, as an upload or the worker would leave it (no bytes: write them
    with insert_chunk or at `path` under STORAGE_DIR); returns its id, filename and path. `worker_id` and
    `claimed_at`: a row a worker holds."""
    filename = filename or storage.new_blob_name()
    created = datetime.fromisoformat(created_at) if isinstance(created_at, str) else created_at
    row = await conn.fetchrow(
        "INSERT INTO files (original_name, filename, mimetype, size, type, status, path, uploaded_by_id, post_id,"
        " chunk_size, sha256, metadata, created_at, expires_at, worker_id, claimed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, COALESCE($13, now()), $14, $15, $16)"
        " RETURNING id, filename, path",
        name,
        filename,
        mimetype,
        size,
        type,
        status,
        storage.blob_key(filename),
        owner_id,
        post_id,
        chunk_size,
        sha256,
        None if metadata is None else json.dumps(metadata),
        created,
        expires_at,
        worker_id,
        claimed_at,
    )
    return dict(row)


async def insert_post(
    conn: asyncpg.Connection,
    author_id: str,
    title: str = "a post",
    *,
    content: str | None = None,
    published: bool = True,
    age_minutes: float = 0,
) -> str:
    """A posts row made directly in SQL, created `age_minutes` ago; returns its id."""
    return await conn.fetchval(
        "INSERT INTO posts (title, content, author_id, published, created_at)"
        " VALUES ($1, $2, $3, $4, now() - make_interval(mins => $5)) RETURNING id",
        title,
        content,
        author_id,
        published,
        float(age_minutes),
    )


async def insert_chunk(conn: asyncpg.Connection, file_id: str, index: int, data: bytes) -> None:
    await conn.execute(
        "INSERT INTO file_chunks (file_id, chunk_index, slot, data) VALUES ($1, $2, chunk_slot($1), $3)",
        file_id,
        index,
        data,
    )


# a request written by hand ------------------------------------------------------------------------


class RawRequest:
    """An HTTP/1.1 request over a plain socket, so a test decides when each byte of the body leaves,
    stalls, or hangs up. `await RawRequest.open(...)`, or `async with RawRequest(...) as r:` (closed after)."""

    def __init__(self, server: Any, method: str, path: str, headers: dict[str, str], version: str = "HTTP/1.1") -> None:
        """`server`: the test client of an in-process app, or a ChunkdProcess."""
        if hasattr(server, "server"):
            self.host, self.port = server.server.host, server.server.port
        else:
            self.host, self.port = "127.0.0.1", server.port
        self.method = method
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{self.host}:{self.port}", **headers}.items())
        self.head = f"{method} {path} {version}\r\n{head}\r\n".encode()

    @classmethod
    async def open(
        cls, server: Any, method: str, path: str, headers: dict[str, str], version: str = "HTTP/1.1"
    ) -> Self:
        return await cls(server, method, path, headers, version).connect()

    async def connect(self) -> Self:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        await self.send(self.head)
        return self

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def status(self, timeout: float = 30) -> int:
        """The status line's code; the rest of the answer is left unread."""
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        return int(line.split()[1])

    async def response(self, timeout: float = 30) -> tuple[int, dict[str, str]]:
        """Status and headers (names lower-cased); the body is left for body()."""
        status = await self.status(timeout)
        headers = {}
        while (line := await asyncio.wait_for(self.reader.readline(), timeout)) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        return status, headers

    async def body(self, headers: dict[str, str], timeout: float = 30) -> bytes:
        """Read by Content-Length: the server may keep reading (and discarding) an unread request body
        before it closes the connection."""
        return await asyncio.wait_for(self.reader.readexactly(int(headers.get("content-length", "0"))), timeout)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(await response.text())
        for s in family.samples
    }


async def session_token(conn, settings: Settings, user_id: str, role: str = "USER") -> str:
    """An access token of a new session of the user, made directly in the database (as a login would)."""
    session_id, refresh = new_session_secret(settings)
    await conn.execute(
        "INSERT INTO sessions (id, user_id, device, refresh_hash, expires_at)"
        " VALUES ($1, $2, 'test', $3, now() + interval '1 day')",
        session_id,
        user_id,
        refresh.digest,
    )
    return issue_access_token(settings, user_id, role, session_id)


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
