"""A real PostgreSQL for the suite: a throwaway cluster (or TEST_DATABASE_URL), a migrated template,
and a fresh database cloned from it for every test."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from service import migrate
from service.app import create_app
from service.config import Settings
from service.embedded import EmbeddedPostgres
from service.keys import tus_locks_key
from tests import ceph
from tests.rufh_support import rufh_app
from tests.support import (
    FAST,
    JWT_SECRET,
    ChunkdProcess,
    User,
    insert_user,
    make_settings,
    scratch_dir,
    with_database,
)
from tests.tus_support import protocol_settings


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A URL to a maintenance database of a server the tests may create databases on."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    base = scratch_dir("chunkd-test-pg-")
    pg = EmbeddedPostgres(base, server_options=FAST)
    pg.start()
    try:
        yield pg.url("postgres")
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    name = f"chunkd_template_{uuid.uuid4().hex[:12]}"

    async def build() -> None:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()
        conn = await asyncpg.connect(with_database(admin_url, name))
        await migrate.deploy(conn)
        await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()

    asyncio.run(build())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def empty_database_url(admin_url: str) -> AsyncIterator[str]:
    """A database with nothing in it (migration tests)."""
    async with _database(admin_url, "template0") as url:
        yield url


@pytest.fixture
async def database_url(admin_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    async with _database(admin_url, template_db) as url:
        yield url


class _database:
    def __init__(self, admin_url: str, template: str) -> None:
        self.admin_url, self.template = admin_url, template
        self.name = f"t_{uuid.uuid4().hex}"

    async def __aenter__(self) -> str:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f"CREATE DATABASE {self.name} TEMPLATE {self.template}")
        finally:
            await admin.close()
        return with_database(self.admin_url, self.name)

    async def __aexit__(self, *exc: object) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        finally:
            await admin.close()


@pytest.fixture
def storage_dir() -> Iterator[Path]:
    path = scratch_dir("chunkd-test-storage-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def ceph_rgw() -> Iterator[ceph.CephRGW]:
    """A real S3 server (Ceph RGW), once per session (per xdist worker); skipped without the Ceph binaries
    unless CHUNKD_REQUIRE_S3=1 says they must be there (CI)."""
    missing = ceph.missing_binaries()
    if missing:
        reason = (
            f"Ceph RGW is not installed (no {', '.join(missing)}; apt-get install ceph-mon ceph-osd "
            "radosgw): S3 tests skipped"
        )
        if os.environ.get("CHUNKD_REQUIRE_S3") == "1":
            pytest.fail(f"CHUNKD_REQUIRE_S3=1 but {reason.partition(':')[0]}")
        pytest.skip(reason)
    rgw = ceph.CephRGW(scratch_dir("chunkd-test-ceph-")).start()
    yield rgw
    rgw.stop()


@pytest.fixture
def make_bucket(ceph_rgw: ceph.CephRGW) -> Iterator:
    """Factory: `make_bucket()` makes an empty bucket of this test's own and returns the environment that
    points chunkd at it (under a prefix); every bucket is emptied and removed afterwards. Synchronous (its
    own loop in a thread), so that sync fixtures can use it too."""
    made: list[str] = []

    def make(prefix: str = "chunkd") -> dict[str, str]:
        name = f"t-{uuid.uuid4().hex[:24]}"
        ceph.run(ceph.create_bucket(ceph_rgw, name))
        made.append(name)
        return ceph_rgw.environment(name, prefix)

    yield make
    for name in made:
        ceph.run(ceph.remove_bucket(ceph_rgw, name))


@pytest.fixture
def storage_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Where blobs go: the local STORAGE_DIR, or with `@on_both_stores` (indirect "s3") a fresh bucket."""
    if getattr(request, "param", "local") == "s3":
        return request.getfixturevalue("make_bucket")()
    return {}


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, database_url: str, storage_dir: Path, storage_env: dict[str, str]
) -> Settings:
    """A test module may set SETTINGS_ENV = {...}: its own environment (small upload chunks, say)."""
    return make_settings(database_url, storage_dir, **{**getattr(request.module, "SETTINGS_ENV", {}), **storage_env})


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def client(aiohttp_client, settings: Settings):
    """The application served over a real socket on localhost."""
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def served(aiohttp_client, settings: Settings):
    """The app with its worker, as `chunkd serve` runs it, over a real socket."""
    return await aiohttp_client(create_app(settings, with_worker=True))


@pytest.fixture
def chunkd(database_url: str, storage_dir: Path, storage_env: dict[str, str]) -> Iterator:
    """Factory: chunkd("serve") starts a real process on this test's database and storage."""
    started: list[ChunkdProcess] = []

    def start(*args: str, wait_path: str | None = "/healthz", **env: str) -> ChunkdProcess:
        base = {"DATABASE_URL": database_url, "STORAGE_DIR": str(storage_dir), "JWT_SECRET": JWT_SECRET, **storage_env}
        process = ChunkdProcess({**base, **env}, *args).start(wait_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        process.log.close()
        os.unlink(process.log.name)


@pytest.fixture
def make_user(conn: asyncpg.Connection, settings: Settings):
    """Factory: `await make_user()` or `await make_user(role="ADMIN", email=...)` (tests.support.insert_user)."""

    async def make(
        role: str = "USER", email: str | None = None, password: str = "correct horse", is_active: bool = True
    ) -> User:
        return await insert_user(conn, settings, role=role, email=email, password=password, is_active=is_active)

    return make


@pytest.fixture
async def user(make_user) -> User:
    return await make_user()


@pytest.fixture
async def admin(make_user) -> User:
    return await make_user(role="ADMIN")


@pytest.fixture
def tus_app(aiohttp_client, database_url: str, storage_dir: Path):
    """Factory: `await tus_app(**env)` is the `tus` app with more settings of the test's own."""

    async def make(**env: str):
        client = await aiohttp_client(create_app(protocol_settings(database_url, storage_dir, **env)))
        _short_takeovers(client)
        return client

    return make


@pytest.fixture
async def rufh(aiohttp_client, database_url: str, storage_dir: Path):
    """The app and its worker, with small chunks and short takeover timings, over a real socket
    (the IETF resumable-upload draft's tests: tests/rufh_support.py)."""
    client = await aiohttp_client(rufh_app(database_url, storage_dir))
    _short_takeovers(client)
    return client


def _short_takeovers(client) -> None:
    locks = client.server.app[tus_locks_key]
    locks.stall_after, locks.lock_wait, locks.nudge_every = 0.3, 1.5, 0.05


@pytest.fixture
async def tus(tus_app):
    """The app with small chunks and a small Tus-Max-Size, and takeover timings short enough for tests."""
    return await tus_app()
