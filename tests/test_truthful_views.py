"""Views that say what the server holds (issue 11): a FAILED upload's resume view lists no chunks and
says why."""
from __future__ import annotations

import os

from tests.uploading import UPLOAD_ENV, sha256, stored, upload, wait_for_status

SETTINGS_ENV = UPLOAD_ENV


async def test_a_failed_uploads_resume_view_holds_no_chunks_and_gives_the_error(served, user, conn) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 * 64 * 1024 + 5)
    file_id = await upload(served, user, data, sha256=sha256(b"something else"))
    assert (await wait_for_status(served, user, file_id))["status"] == "FAILED"
    assert await stored(conn, file_id) == []

    r = await served.get(f"/api/uploads/{file_id}", headers=user.headers)
    assert r.status == 200
    view = await r.json()
    assert view["status"] == "FAILED" and view["received"] == [] and view["missing"] == [0, 1, 2, 3]
    assert "sha256 mismatch" in view["error"]
