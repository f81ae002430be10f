"""Operations over real uploads processed by the worker: statistics, metrics, cleanup and backup/restore."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from service import backup, cleanup
from service.app import create_app
from service.config import Settings
from service.keys import pool_key
from tests.support import insert_file, make_settings, on_both_stores, scratch_dir, stored_keys
from tests.uploading import UPLOAD_ENV, create, noise_png, put_chunks, sha256, upload, wait_for_status

SETTINGS_ENV = UPLOAD_ENV


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def mixed_uploads(served, user) -> dict[str, bytes]:
    """Two COMPLETED (an image, a text), one FAILED (wrong declared SHA-256), one still UPLOADING."""
    files = {
        "photo.png": noise_png(300, 200),
        "notes.txt": b"plain words\n" * 30000,
        "broken.bin": b"\x00\x01" * 50000,
        "partial.bin": b"p" * 200000,
    }
    ids = {
        "photo.png": await upload(served, user, files["photo.png"], "photo.png"),
        "notes.txt": await upload(served, user, files["notes.txt"], "notes.txt"),
        "broken.bin": await upload(served, user, files["broken.bin"], "broken.bin", sha256="0" * 64),
    }
    partial = await create(served, user, files["partial.bin"], "partial.bin")
    await put_chunks(served, user, partial, files["partial.bin"], indexes=[0])
    for name in ("photo.png", "notes.txt", "broken.bin"):
        await wait_for_status(served, user, ids[name])
    return files


async def test_stats_and_metrics_after_real_uploads(served, conn, user, admin) -> None:
    before = {
        name: counter(name)
        for name in (
            "chunkd_uploads_completed_total",
            "chunkd_uploads_failed_total",
            "chunkd_processing_duration_seconds_count",
        )
    }
    created_before = counter("chunkd_uploads_created_total", protocol="native")
    files = await mixed_uploads(served, user)

    stats = await (await served.get("/api/admin/stats/files", headers=admin.headers)).json()
    rows = await conn.fetch("""SELECT type::text, status::text, count(*), sum(size)::bigint AS total
                                 FROM files GROUP BY 1, 2""")
    assert {(s["type"], s["status"], s["count"], s["total_size"]) for s in stats} == {
        (r["type"], r["status"], r["count"], r["total"]) for r in rows
    }
    assert {(s["type"], s["status"]) for s in stats} == {
        ("IMAGE", "COMPLETED"),
        ("DOCUMENT", "COMPLETED"),
        ("OTHER", "FAILED"),
        ("OTHER", "UPLOADING"),
    }
    daily = await (await served.get("/api/admin/stats/uploads/daily?days=1", headers=admin.headers)).json()
    assert daily[0]["uploads"] == 4 and daily[0]["total_size"] == sum(map(len, files.values()))

    response = await served.get("/metrics")
    text = await response.text()
    assert counter("chunkd_uploads_completed_total") - before["chunkd_uploads_completed_total"] == 2
    assert counter("chunkd_uploads_failed_total") - before["chunkd_uploads_failed_total"] == 1
    assert counter("chunkd_processing_duration_seconds_count") - before["chunkd_processing_duration_seconds_count"] == 3
    assert counter("chunkd_uploads_created_total", protocol="native") - created_before == 4
    assert 'chunkd_http_requests_total{method="PUT",route="/api/uploads/{id}/chunks/{index}",status="201"}' in text
    assert 'chunkd_processing_queue_depth{state="waiting"} 0.0' in text


@pytest.fixture
def restored_storage() -> Iterator[Path]:
    path = scratch_dir("chunkd-test-restored-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@on_both_stores
async def test_backup_and_restore_of_processed_files(
    served,
    aiohttp_client,
    user,
    settings: Settings,
    empty_database_url: str,
    restored_storage: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Into an empty database and an empty store: another directory, or another bucket."""
    on_s3 = settings.storage_url.startswith("s3://")
    files = await mixed_uploads(served, user)
    blobs = await stored_keys(settings)
    assert len(blobs) == 3 and any(b.startswith("thumbs/") for b in blobs)  # two files, the photo's thumbnail

    archive, _ = await backup.backup(settings, tmp_path)
    elsewhere = request.getfixturevalue("make_bucket")() if on_s3 else {}
    target = make_settings(empty_database_url, restored_storage, **UPLOAD_ENV, **elsewhere)
    await backup.restore(target, archive)

    again = await aiohttp_client(create_app(target))
    listing = await (await again.get("/api/files?limit=100", headers=user.headers)).json()
    by_name = {f["original_name"]: f for f in listing["files"]}
    for name in ("photo.png", "notes.txt"):
        content = await again.get(f"/api/files/{by_name[name]['id']}/content", headers=user.headers)
        assert content.status == 200 and sha256(await content.read()) == sha256(files[name])
    thumb = await again.get(f"/api/files/{by_name['photo.png']['id']}/thumbnail", headers=user.headers)
    assert thumb.status == 200
    assert await stored_keys(target) == blobs
    if on_s3:
        return  # objects cannot be aged: the grace periods are the local test's

    day_ago = time.time() - 86400
    for path in settings.storage_path.rglob("*"):
        os.utime(path, (day_ago, day_ago))  # past every grace period
    report = await cleanup.run_cleanup(served.server.app[pool_key], settings, dry_run=True)
    assert report.blobs == [] and report.files == []  # nothing the worker left behind is garbage


async def test_the_worker_runs_cleanup_every_interval(
    aiohttp_client, database_url: str, storage_dir: Path, conn, user
) -> None:
    orphan = storage_dir / "files" / "ab" / ("ab" + "0" * 30)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"no row points here")
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    expired = (
        await insert_file(
            conn,
            user.id,
            status="UPLOADING",
            size=1,
            type="OTHER",
            chunk_size=1,
            expires_at=datetime.now(UTC) - timedelta(minutes=1),
        )
    )["id"]
    settings = make_settings(database_url, storage_dir, CLEANUP_INTERVAL="1s", **UPLOAD_ENV)
    await aiohttp_client(create_app(settings, with_worker=True))
    deadline = time.monotonic() + 10
    while orphan.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not orphan.exists()
    assert await conn.fetchval("SELECT count(*) FROM files WHERE id = $1", expired) == 0
