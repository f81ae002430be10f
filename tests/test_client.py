"""chunkd upload: uploads a file, is killed halfway, and the re-run finishes it with identical bytes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

from tests.support import ROOT

CHUNK = 128 * 1024


def upload_command(path: Path, url: str, state_dir: Path, *auth: str, parallel: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "service",
        "upload",
        str(path),
        "--url",
        url,
        *auth,
        "--chunk-size",
        str(CHUNK),
        "--parallel",
        str(parallel),
        "--state-dir",
        str(state_dir),
    ]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


async def wait_for_bytes(conn: asyncpg.Connection, name: str, timeout: float = 30) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await conn.fetchrow("SELECT id, bytes_received FROM files WHERE original_name = $1", name)
        if row and row["bytes_received"] > 0:
            return row["id"], row["bytes_received"]
        time.sleep(0.002)
    raise AssertionError("the client sent nothing")


async def content_sha256(url: str, file_id: str, headers: dict[str, str]) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/files/{file_id}/content", headers=headers) as response,
    ):
        assert response.status == 200
        return hashlib.sha256(await response.read()).hexdigest()


async def test_killed_upload_resumes_and_finishes_with_identical_bytes(chunkd, conn, user, tmp_path: Path) -> None:
    server = chunkd("serve")
    data = os.urandom(24 * 1024 * 1024 + 12345)  # 193 chunks, the last one short
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    state_dir = tmp_path / "state"

    first = subprocess.Popen(
        upload_command(path, server.url, state_dir, "--token", user.token, parallel=1),
        env=env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    file_id, _sent = await wait_for_bytes(conn, "big.bin")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    received = await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", file_id)
    assert 0 < received < len(data), "killed too late to prove anything"
    assert [json.loads(p.read_text())["upload_id"] for p in state_dir.glob("*.json")] == [file_id]

    second = subprocess.run(
        upload_command(path, server.url, state_dir, "--token", user.token),
        env=env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    assert "resuming upload " + file_id in second.stderr
    digest = hashlib.sha256(data).hexdigest()
    assert second.stdout.strip() == f"COMPLETED {file_id} big.bin {len(data)} bytes OTHER sha256 {digest}"
    assert await conn.fetchval("SELECT count(*) FROM files") == 1  # the same upload, not a second one
    # The client hashed the file while sending and gave the digest at complete: the worker checked it.
    assert await conn.fetchval("SELECT sha256 FROM files WHERE id = $1", file_id) == digest
    assert await content_sha256(server.url, file_id, user.headers) == digest
    assert list(state_dir.glob("*.json")) == []  # done: nothing left to resume


async def test_login_by_email_and_password(chunkd, conn, make_user, tmp_path: Path) -> None:
    server = chunkd("serve", ACCESS_TOKEN_TTL="1s")  # expires during the upload: refreshed, not logged in again
    someone = await make_user(email="uploader@example.com", password="s3cret-pass")
    path = tmp_path / "notes.txt"
    path.write_text("hello chunkd\n" * 20000)
    done = subprocess.run(
        upload_command(path, server.url, tmp_path / "state", "--email", someone.email),
        env=env(CHUNKD_PASSWORD="s3cret-pass"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("COMPLETED ") and " notes.txt 260000 bytes DOCUMENT " in done.stdout
    assert await conn.fetchval("SELECT uploaded_by_id FROM files WHERE original_name = 'notes.txt'") == someone.id
    # The upload had a session of its own ("chunkd upload"), ended when it was done; the fixture's is untouched.
    sessions = await conn.fetch(
        "SELECT device, revoked_why FROM sessions WHERE user_id = $1 ORDER BY device", someone.id
    )
    assert [(s["device"], s["revoked_why"]) for s in sessions] == [("chunkd upload", "logout"), ("test", None)]


def test_refused_token_is_one_line(chunkd, tmp_path: Path) -> None:
    server = chunkd("serve")
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 10)
    done = subprocess.run(
        upload_command(path, server.url, tmp_path / "state", "--token", "not-a-token"),
        env=env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"chunkd: {server.url} refused the access token (401 UNAUTHORIZED: access token invalid): "
        "run `chunkd login`, or pass a valid --token (or CHUNKD_TOKEN)"
    )
