"""Views that tell the truth (issue 11): a FAILED upload's resume view lists no chunks and says why; a
published post's files can be fetched by the post's readers, so its listing never links to a 404."""

from __future__ import annotations

import os

from tests.uploading import UPLOAD_ENV, jpeg, sha256, stored, upload, wait_for_status

SETTINGS_ENV = UPLOAD_ENV


async def test_a_failed_uploads_resume_view_holds_no_chunks_and_gives_the_error(served, user, conn) -> None:
    data = os.urandom(3 * 64 * 1024 + 5)
    file_id = await upload(served, user, data, sha256=sha256(b"something else"))
    assert (await wait_for_status(served, user, file_id))["status"] == "FAILED"
    assert await stored(conn, file_id) == []

    r = await served.get(f"/api/uploads/{file_id}", headers=user.headers)
    assert r.status == 200
    view = await r.json()
    assert view["status"] == "FAILED" and view["received"] == [] and view["missing"] == [0, 1, 2, 3]
    assert "sha256 mismatch" in view["error"]


async def test_a_published_posts_files_are_readable_by_its_readers_a_drafts_are_not(
    served, make_user, user, conn
) -> None:
    reader = await make_user()
    image = jpeg(64, 48)
    files = {}
    for published in (True, False):
        r = await served.post(
            "/api/posts", json={"title": f"published={published}", "published": published}, headers=user.headers
        )
        assert r.status == 201, await r.text()
        post_id = (await r.json())["id"]
        files[published] = await upload(served, user, image, "photo.jpg", post_id=post_id)
        assert (await wait_for_status(served, user, files[published]))["status"] == "COMPLETED"

    r = await served.get(f"/api/posts/{await post_of(conn, files[True])}", headers=reader.headers)
    assert r.status == 200
    listed = (await r.json())["files"]
    assert [f["id"] for f in listed] == [files[True]]
    r = await served.get(listed[0]["url"], headers=reader.headers)  # the listing's link answers
    assert r.status == 200 and await r.read() == image
    r = await served.get(f"/api/files/{files[True]}/thumbnail", headers=reader.headers)
    assert r.status == 200 and r.headers["Content-Type"] == "image/webp"

    for what in ("content", "thumbnail"):  # a draft's files stay the author's (and admins')
        r = await served.get(f"/api/files/{files[False]}/{what}", headers=reader.headers)
        assert r.status == 404 and (await r.json())["code"] == "FILE_NOT_FOUND"
        r = await served.get(f"/api/files/{files[False]}/{what}", headers=user.headers)
        assert r.status == 200
    r = await served.get(f"/api/files/{files[True]}", headers=reader.headers)
    assert r.status == 404  # the status view and its metadata stay the owner's


async def post_of(conn, file_id: str) -> str:
    return await conn.fetchval("SELECT post_id FROM files WHERE id = $1", file_id)
