"""Decoders run in child processes: a file that hangs, crashes or starves one fails with a reason
after one retry, while the worker and the other files go on; a child that cannot start is the
environment's fault and retried. Real uploads, a real worker, real child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service import db
from service.app import create_app
from service.worker import Worker
from tests import media_files as media
from tests.test_worker import file_row, insert_ready_file
from tests.uploading import UPLOAD_ENV, jpeg, upload, wait_for_status

SETTINGS_ENV = {**UPLOAD_ENV, "PROCESSING_TIMEOUT": "1s"}


@pytest.fixture
async def pool(settings) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(settings, max_size=4)
    yield p
    await p.close()


def decoder_children() -> list[int]:
    """Pids of this process's decoder children (the worker runs inside the test's process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"service.media.child" in cmdline:
            found.append(int(entry.name))
    return found


def decoding(pid: int) -> bool:
    """The child holds an assembled file open: it is decoding it, past its start-up."""
    try:
        return any(os.readlink(fd).endswith(".part") for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


async def test_a_decoder_stuck_past_the_time_limit_fails_the_file_and_nothing_else(served, user) -> None:
    started = time.monotonic()
    stuck = await upload(served, user, media.slow_pdf(5000), "stuck.pdf")  # minutes of PDFium time
    photo_data = jpeg(640, 480)
    photo = await upload(served, user, photo_data, "photo.jpg")
    body = await wait_for_status(served, user, stuck, timeout=60)
    assert body["status"] == "FAILED" and body["thumbnail"] is None
    assert body["error"] == "decoding took longer than PROCESSING_TIMEOUT (1 s), 2 times", body["error"]
    assert time.monotonic() - started < 45  # two seconds of decoding, not minutes
    other = await wait_for_status(served, user, photo)
    assert other["status"] == "COMPLETED" and other["metadata"]["width"] == 640

    again = await upload(served, user, media.pillow_pdf(2, "After", "Worker"), "after.pdf")
    after = await wait_for_status(served, user, again)
    assert after["status"] == "COMPLETED" and after["metadata"]["page_count"] == 2  # the worker goes on
    assert not [pid for pid in decoder_children() if decoding(pid)]  # no stuck decoder left behind


async def test_a_crashing_decoder_is_retried_once_then_fails_the_file(
    aiohttp_client,
    settings,
    user,
    monkeypatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", "a-secret-no-decoder-may-see-" + "x" * 10)
    client = await aiohttp_client(create_app(settings.replace(processing_timeout=600), with_worker=True))
    file_id = await upload(client, user, media.slow_pdf(20000), "crash.pdf")
    for _ in range(2):  # the first decoder, then the fresh one that retries the file
        deadline = time.monotonic() + 60
        while not (busy := [pid for pid in decoder_children() if decoding(pid)]):
            assert time.monotonic() < deadline, "no decoder took the file"
            await asyncio.sleep(0.05)
        assert b"JWT_SECRET" not in Path(f"/proc/{busy[0]}/environ").read_bytes()
        os.kill(busy[0], signal.SIGSEGV)  # as a decoder bug would
        while busy[0] in decoder_children():
            await asyncio.sleep(0.05)
    body = await wait_for_status(client, user, file_id)
    assert body["status"] == "FAILED" and body["error"] == "the decoder crashed (SIGSEGV), 2 times", body["error"]

    second = await upload(client, user, media.wav(), "after.wav")
    after = await wait_for_status(client, user, second)
    assert after["status"] == "COMPLETED" and after["metadata"]["duration"] == 1.5


async def test_a_file_needing_more_memory_than_the_limit_fails(aiohttp_client, settings, user) -> None:
    client = await aiohttp_client(create_app(settings.replace(processing_memory=320 * 1024 * 1024), with_worker=True))
    greedy = await upload(client, user, media.solid_png(9000, 9000), "greedy.png")  # 81 MP: 324 MB decoded
    small = await upload(client, user, jpeg(800, 600), "small.jpg")
    body = await wait_for_status(client, user, greedy)
    assert body["status"] == "FAILED", body
    assert body["error"] == "decoding needs more memory than PROCESSING_MEMORY (320 MiB)", body["error"]
    other = await wait_for_status(client, user, small)
    assert other["status"] == "COMPLETED" and other["metadata"]["width"] == 800


async def test_a_decoder_that_cannot_start_is_retried_not_failed(pool, settings, user, conn, monkeypatch) -> None:
    file_id = await insert_ready_file(conn, user.id, [jpeg(64, 64)], name="x.jpg")
    monkeypatch.setattr("sys.executable", "/bin/false")  # a broken installation: the child exits at once
    worker = Worker(settings, pool)
    assert await worker.run_once() == 1
    row = await file_row(conn, file_id)
    assert row["status"] == "PROCESSING" and row["worker_id"] is None and row["attempts"] == 1, row["error"]
    monkeypatch.undo()
    await conn.execute("UPDATE files SET run_after = now() WHERE id = $1", file_id)
    assert await worker.run_once() == 1
    await worker.close()
    assert (await file_row(conn, file_id))["status"] == "COMPLETED"
