"""Real tus clients from their registries against `chunkd serve` (HTTP server and worker): tuspy from
PyPI (the `test` extra) and tus-js-client from npm, run with node. Each uploads a multi-MiB file that
reaches COMPLETED with identical bytes; each is interrupted and finished by a new client instance from
the stored upload URL; tus-js-client's parallel uploads exercise concatenation."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from tusclient.client import TusClient

from tests.tus_support import TUS, sha256, unlocked, until, upload_id
from tests.uploading import noise_png

MiB = 1024 * 1024
TUS_JS_CLIENT = "tus-js-client@4.3.1"
DRIVER = Path(__file__).with_name("tus_js_client.js")
CACHE = Path(os.environ.get("CHUNKD_TEST_CACHE", Path.home() / ".cache" / "chunkd-tests"))


@pytest.fixture(scope="session")
def tus_js() -> Path:
    """node_modules holding tus-js-client, installed from npm once per machine (a fresh CI clone too).
    Every xdist worker asks: the first installs under an exclusive lock, the others wait and find it there."""
    prefix = CACHE / "node"
    package = prefix / "node_modules" / "tus-js-client" / "package.json"
    prefix.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "node.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not package.is_file() or json.loads(package.read_text())["version"] != TUS_JS_CLIENT.split("@")[1]:
            assert shutil.which("node") and shutil.which("npm"), "the tus-js-client tests need node and npm"
            subprocess.run(
                ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", TUS_JS_CLIENT],
                check=True,
                capture_output=True,
                timeout=300,
            )
    return prefix / "node_modules"


async def node(tus_js: Path, command: str, **options: object) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        command,
        json.dumps(options),
        env={**os.environ, "NODE_PATH": str(tus_js)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def completed(http: aiohttp.ClientSession, server, user, file_id: str) -> dict:
    """The file once the worker is done with it; its content must be downloadable."""
    deadline = time.monotonic() + 60
    while True:
        r = await http.get(f"{server.url}/api/files/{file_id}", params={"wait": "5"}, headers=user.headers)
        assert r.status == 200, await r.text()
        body = await r.json()
        if body["status"] in ("COMPLETED", "FAILED"):
            assert body["status"] == "COMPLETED", body
            return body
        assert time.monotonic() < deadline, f"file {file_id} still {body['status']}"


async def content(http: aiohttp.ClientSession, server, user, file_id: str) -> bytes:
    r = await http.get(f"{server.url}/api/files/{file_id}/content", headers=user.headers)
    assert r.status == 200
    return await r.read()


async def test_tus_js_client_killed_mid_patch_is_resumed_by_a_new_process(chunkd, user, conn, tus_js, tmp_path) -> None:
    server = chunkd("serve", DEFAULT_CHUNK_SIZE="1MiB")
    data = os.urandom(6 * MiB + 12345)
    source, url_file = tmp_path / "clip.bin", tmp_path / "upload-url"
    source.write_bytes(data)
    endpoint = f"{server.url}/api/tus/"

    code, _, err = await node(
        tus_js, "kill-at", endpoint=endpoint, token=user.token, file=str(source), urlFile=str(url_file), killAt=3 * MiB
    )
    assert code == -9, err  # SIGKILLed in the middle of its one PATCH
    file_id = upload_id(url_file.read_text())
    await until(lambda: _received_and_unlocked(conn, file_id), timeout=10)
    kept = await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", file_id)
    # What arrived was kept: the new client starts from there. The client's progress counts the 64 KiB
    # piece it has queued, which the kill may catch before it leaves: one piece less may have arrived.
    assert 3 * MiB - 64 * 1024 <= kept < len(data)

    code, out, err = await node(
        tus_js, "resume", endpoint=endpoint, token=user.token, file=str(source), urlFile=str(url_file)
    )
    assert code == 0, err
    assert upload_id(json.loads(out)["url"]) == file_id
    async with aiohttp.ClientSession() as http:
        body = await completed(http, server, user, file_id)
        assert body["size"] == len(data) and body["metadata"]["sha256"] == sha256(data)
        assert await content(http, server, user, file_id) == data


async def _received_and_unlocked(conn, file_id: str) -> bool:
    received = await conn.fetchval("SELECT bytes_received FROM files WHERE id = $1", file_id)
    return received > 0 and await unlocked(conn, file_id)


async def test_tus_js_client_parallel_uploads_are_concatenated(chunkd, user, conn, tus_js, tmp_path) -> None:
    server = chunkd("serve", DEFAULT_CHUNK_SIZE="512KiB")
    data = os.urandom(5 * MiB + 777)
    source = tmp_path / "archive.bin"
    source.write_bytes(data)
    code, out, err = await node(
        tus_js,
        "parallel",
        endpoint=f"{server.url}/api/tus/",
        token=user.token,
        file=str(source),
        parallel=3,
        metadata={"filename": "archive.bin", "filetype": "application/octet-stream"},
    )
    assert code == 0, err
    file_id = upload_id(json.loads(out)["url"])
    row = await conn.fetchrow(
        "SELECT tus_concat, array_length(tus_parts, 1) AS parts FROM files WHERE id = $1", file_id
    )
    assert (row["tus_concat"], row["parts"]) == ("final", 3)
    assert await conn.fetchval("SELECT count(*) FROM files WHERE tus_concat = 'partial'") == 0
    async with aiohttp.ClientSession() as http:
        body = await completed(http, server, user, file_id)
        assert body["original_name"] == "archive.bin" and body["size"] == len(data)
        assert await content(http, server, user, file_id) == data


async def test_tuspy_with_checksums_stopped_and_resumed_by_a_new_client(chunkd, user, tmp_path) -> None:
    server = chunkd("serve", DEFAULT_CHUNK_SIZE="1MiB")
    image = noise_png(1400, 1000)  # about 4 MiB of incompressible PNG
    assert len(image) > 3 * MiB
    source = tmp_path / "photo.png"
    source.write_bytes(image)
    endpoint = f"{server.url}/api/tus/"
    headers = {"Authorization": f"Bearer {user.token}"}

    # tuspy never closes a file it opened itself (ResourceWarning): it is given open streams instead.
    def first_session() -> str:
        with source.open("rb") as stream:
            uploader = TusClient(endpoint, headers=headers).uploader(
                file_stream=stream,
                chunk_size=MiB,
                upload_checksum=True,
                metadata={"filename": "photo.png", "filetype": "image/png"},
            )
            uploader.upload(stop_at=2 * MiB)  # the app is closed here
        assert uploader.offset == 2 * MiB and uploader.url is not None
        return uploader.url

    def second_session(url: str) -> int:
        with source.open("rb") as stream:
            uploader = TusClient(endpoint, headers=headers).uploader(
                file_stream=stream, url=url, chunk_size=MiB, upload_checksum=True
            )
            resumed_at = uploader.offset  # asked the server with HEAD
            uploader.upload()
        return resumed_at

    url = await asyncio.to_thread(first_session)
    assert await asyncio.to_thread(second_session, url) == 2 * MiB
    file_id = upload_id(url)
    async with aiohttp.ClientSession() as http:
        r = await http.head(url, headers={**headers, **TUS})
        assert r.headers["Upload-Offset"] == r.headers["Upload-Length"] == str(len(image))
        body = await completed(http, server, user, file_id)
        assert (body["type"], body["mimetype"], body["original_name"]) == ("IMAGE", "image/png", "photo.png")
        assert body["metadata"]["width"] == 1400 and body["thumbnail"]
        assert await content(http, server, user, file_id) == image
