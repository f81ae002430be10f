"""The embedded PostgreSQL: found, shared between processes (the last one out stops it), a clear line
when absent; and a server whose database goes away says so once and serves again when it is back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from service import migrate
from service.db import connect
from service.embedded import MALLOC_ENVIRONMENT, EmbeddedError, EmbeddedPostgres, find_bin_dir, prepare_database
from tests.support import FAST, JWT_SECRET, ROOT, ChunkdProcess, free_port, make_settings, scratch_dir


def test_missing_binaries_give_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedError) as e:
        find_bin_dir(path=str(tmp_path), versioned=str(tmp_path / "none" / "*" / "bin"), wheel=False)
    message = str(e.value)
    assert "\n" not in message
    assert "install PostgreSQL" in message and "chunkd[embedded]" in message and "DATABASE_URL" in message


def test_a_second_instance_shares_the_running_server() -> None:
    base = scratch_dir("chunkd-test-share-")
    first, second = EmbeddedPostgres(base), EmbeddedPostgres(base)
    try:
        first.start()
        second.start()
        assert first.started_here and not second.started_here
        second.stop()  # not its server: leaves it running
        assert first.running()
    finally:
        first.stop()
    assert not first.running()
    shutil.rmtree(base, ignore_errors=True)


def test_the_server_runs_with_chunkds_malloc_tunables() -> None:
    """Chunk-sized allocations from the heap, not a fresh mmap each (embedded.MALLOC_ENVIRONMENT): the
    postmaster, whose malloc settings every backend inherits, has them."""
    base = scratch_dir("chunkd-test-malloc-")
    pg = EmbeddedPostgres(base)
    try:
        pg.start()
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        environ = Path(f"/proc/{postmaster}/environ").read_bytes().split(b"\0")
        assert {f"{k}={v}".encode() for k, v in MALLOC_ENVIRONMENT.items()} <= set(environ)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_serve_starts_embedded_postgres_and_answers_readyz() -> None:
    """`chunkd serve` with no DATABASE_URL: initdb, start, migrate, serve; stops PostgreSQL on exit."""
    workdir = scratch_dir("chunkd-test-serve-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    port = free_port()
    env.update(PORT=str(port), JWT_SECRET="x" * 40, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "serve did not become ready"
                time.sleep(0.2)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    data_dir = workdir / "var" / "postgres" / "data"
    assert (data_dir / "PG_VERSION").is_file()
    assert not EmbeddedPostgres(workdir / "var" / "postgres").running(), "PostgreSQL left running"
    # The embedded server runs with the workload's settings, which doctor checks against the server's own.
    doctor = subprocess.run(
        [sys.executable, "-m", "service", "doctor"], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )
    assert doctor.returncode == 0 and "ok   postgresql settings:" in doctor.stdout, doctor.stdout + doctor.stderr
    shutil.rmtree(workdir, ignore_errors=True)


def readyz(url: str) -> int:
    """The status /readyz answers, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def register(url: str, email: str) -> str:
    """A new account on the server; its access token."""
    body = json.dumps({"email": email, "password": "a long enough password"}).encode()
    request = urllib.request.Request(
        f"{url}/api/auth/register", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())["access_token"]


def upload(url: str, token: str, workdir: Path, name: str) -> None:
    """`chunkd upload` of a fresh file: COMPLETED, with the file's SHA-256 as the server computed it."""
    data = os.urandom(300_000)
    path = workdir / name
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-m", "service", "upload", str(path), "--url", url, "--token", token]
        + ["--state-dir", str(workdir / "state")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("COMPLETED ") and done.stdout.split()[-1] == hashlib.sha256(data).hexdigest()


def test_the_last_server_out_stops_the_shared_postgres() -> None:
    """Two `chunkd serve` on one ./var/: stopping the first leaves PostgreSQL to the second, which keeps
    serving; stopping the second, the last user, stops PostgreSQL."""
    workdir = scratch_dir("chunkd-test-two-serve-")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(JWT_SECRET=JWT_SECRET, STORAGE_DIR=str(workdir / "storage"), PYTHONPATH=str(ROOT))
    servers: list[ChunkdProcess] = []
    try:
        for _ in range(2):
            server = ChunkdProcess(env, "serve", cwd=workdir)
            servers.append(server.start(wait_path="/healthz", timeout=120))
            wait_for(lambda s=server: readyz(s.url) == 200, "serve did not become ready")
        first, second = servers
        assert "action=pg_started" in first.output() and "action=pg_shared" in second.output()
        pg = EmbeddedPostgres(workdir / "var" / "postgres")

        assert first.stop() == 0, first.output()
        assert "action=pg_left" in first.output()
        assert pg.running()
        assert readyz(second.url) == 200
        upload(second.url, register(second.url, "second@example.com"), workdir, "after-first.bin")

        assert second.stop() == 0, second.output()
        assert "action=pg_stopped" in second.output()
        assert not pg.running()
        assert not (pg.data_dir / "postmaster.pid").exists()
        assert processes_using(pg.data_dir) == [], "postmaster left running"
        assert "Traceback" not in first.output() + second.output()
    finally:
        for server in servers:
            server.stop()
            server.log.close()
            os.unlink(server.log.name)
        shutil.rmtree(workdir, ignore_errors=True)


def processes_using(data_dir: Path) -> list[str]:
    """Command lines of the processes that name `data_dir` (a postmaster runs as `postgres -D <dir>`)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        if str(data_dir).encode() in words and any(w.endswith(b"postgres") for w in words):
            found.append(b" ".join(words).decode(errors="replace"))
    return found


def test_a_server_whose_database_restarts_says_so_once_and_serves_again() -> None:
    """The database stops under a running server (a restart, a failover): one WARNING, 503 meanwhile,
    one INFO when it is back; then the listener, the pool and the worker all work again."""
    base = scratch_dir("chunkd-test-restart-")
    pg = EmbeddedPostgres(base / "pg", server_options=FAST)
    pg.start()
    server: ChunkdProcess | None = None
    try:
        asyncio.run(prepare_database(pg, "chunkd"))
        settings = make_settings(pg.url("chunkd"), base / "storage")
        asyncio.run(_migrate(settings))
        env = {"DATABASE_URL": settings.database_url, "STORAGE_DIR": str(base / "storage"), "JWT_SECRET": JWT_SECRET}
        server = ChunkdProcess({**env, "PYTHONPATH": str(ROOT)}, "serve").start(timeout=60)
        wait_for(lambda: readyz(server.url) == 200, "serve did not become ready")
        token = register(server.url, "restart@example.com")

        pg.stop()
        wait_for(lambda: readyz(server.url) == 503, "readyz did not answer 503 with the database down", 30)
        time.sleep(6)  # the listener, the worker's loops and these requests all meet the outage meanwhile
        assert readyz(server.url) == 503
        down = server.output()
        # A slow request on a loaded machine is its own WARNING, not the outage's: every other one counts.
        warnings = [line for line in down.splitlines() if " WARNING " in line and "action=slow_request" not in line]
        assert len(warnings) == 1 and " WARNING service.db: database unavailable: " in warnings[0], down
        assert "action=database_lost" in warnings[0]

        pg.start()
        wait_for(lambda: readyz(server.url) == 200, "readyz did not recover after the database came back", 60)
        upload(server.url, token, base, "after-restart.bin")
        log = server.output()
        assert log.count("action=database_back") == 1, log
        assert " INFO service.db: database is back after " in log
        assert log.count("action=database_lost") == 1, log
        assert "Traceback" not in log
    finally:
        if server is not None:
            server.stop()
            server.log.close()
            os.unlink(server.log.name)
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


async def _migrate(settings) -> None:
    conn = await connect(settings)
    try:
        await migrate.deploy(conn)
    finally:
        await conn.close()


def test_a_newcomer_starting_while_the_last_user_stops_gets_a_running_server() -> None:
    """The race of a newcomer starting while the last user leaves, run a few times: whichever takes
    the cluster's lock second finds the server as the first left it, so the newcomer always ends with
    a running server, and leaving after it stops it."""
    base = scratch_dir("chunkd-test-race-")
    leaver, newcomer = EmbeddedPostgres(base, server_options=FAST), EmbeddedPostgres(base, server_options=FAST)
    try:
        for _ in range(3):
            leaver.start()
            threads = [threading.Thread(target=leaver.stop), threading.Thread(target=newcomer.start)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert newcomer.running()
            newcomer.stop()
            assert not newcomer.running()
    finally:
        leaver.stop()
        newcomer.stop()
        shutil.rmtree(base, ignore_errors=True)
