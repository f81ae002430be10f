"""Signed links: a file's content, thumbnail and events open without a header (as <img src>, a
download link and EventSource do) until LINK_TTL, for the user they were made for; a tampered or
expired link is a 403 problem, a deleted file's a 404; post readers get links to the author's files."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs, urlsplit

import aiohttp

from tests.uploading import UPLOAD_ENV, jpeg, sha256, upload, wait_for_status

SETTINGS_ENV = {**UPLOAD_ENV, "LINK_TTL": "4s"}


def expiry(link: str) -> int:
    return int(parse_qs(urlsplit(link).query)["exp"][0])


async def bare_get(served, link: str, **headers: str) -> tuple[int, dict, bytes]:
    """A request as a browser's <img> makes it: its own connection, no Authorization header."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{served.host}:{served.port}{link}", headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def test_links_work_without_a_header_and_stop_after_expiry(served, user) -> None:
    data = jpeg(640, 480)
    file_id = await upload(served, user, data, "photo.jpg")
    file = await wait_for_status(served, user, file_id)
    assert file["status"] == "COMPLETED"
    for key in ("content_url", "thumbnail_url", "events_url"):
        assert file[key].startswith(f"/api/files/{file_id}/") and "sig=" in file[key], key

    status, headers, body = await bare_get(served, file["content_url"])
    assert status == 200 and sha256(body) == sha256(data)
    assert headers["Content-Disposition"].startswith("attachment;")
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = await bare_get(served, file["content_url"] + "&disposition=inline")
    assert status == 200 and headers["Content-Disposition"].startswith("inline;")
    assert "sandbox" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = await bare_get(served, file["thumbnail_url"])
    assert status == 200 and headers["Content-Disposition"] == "inline" and headers["Content-Type"].startswith("image/")
    status, headers, body = await bare_get(served, file["events_url"])
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert b"event: status" in body and b'"COMPLETED"' in body
    status, headers, _ = await bare_get(served, file["content_url"], Range="bytes=0-9")
    assert status == 206

    # A link opens only what it was signed for: not the file's JSON, nor another purpose.
    query = urlsplit(file["content_url"]).query
    status, headers, body = await bare_get(served, f"/api/files/{file_id}?{query}")
    assert status == 403 and headers["Content-Type"].startswith("application/problem+json")
    status, _, _ = await bare_get(served, f"/api/files/{file_id}/thumbnail?{query}")
    assert status == 403

    await asyncio.sleep(max(expiry(file["content_url"]) - time.time(), 0) + 1.1)
    status, headers, body = await bare_get(served, file["content_url"])
    assert status == 403 and b"LINK_EXPIRED" in body and headers["Content-Type"].startswith("application/problem+json")
    fresh = await (await served.get(f"/api/files/{file_id}", headers=user.headers)).json()
    assert expiry(fresh["content_url"]) > time.time()
    assert (await bare_get(served, fresh["content_url"]))[0] == 200


async def test_a_304_never_confirms_a_link_about_to_expire(served, user) -> None:
    """LINK_TTL is 4 s here: links made in one 2 s step expire together, 2 to 4 s later. A poller that
    follows the ETag gets 304 within a step and, at the step, a 200 with fresh links: whenever its copy
    is confirmed current, the content link it holds has at least LINK_TTL/2 to live, and opens."""
    file_id = await upload(served, user, b"status polled across a link expiry step\n" * 10, "poll.txt")
    await wait_for_status(served, user, file_id)
    url = f"/api/files/{file_id}"
    r = await served.get(url, headers=user.headers)
    etag, link = r.headers["ETag"], (await r.json())["content_url"]
    answers: list[int] = []
    deadline = time.time() + 5
    while (sent := time.time()) < deadline:
        r = await served.get(url, headers={**user.headers, "If-None-Match": etag})
        answers.append(r.status)
        if r.status == 200:
            fresh = (await r.json())["content_url"]
            assert r.headers["ETag"] != etag and expiry(fresh) > expiry(link)
            etag, link = r.headers["ETag"], fresh
        else:
            assert r.status == 304 and r.headers["ETag"] == etag
        assert expiry(link) > sent + 2  # at least LINK_TTL/2 left when the server answered
        await asyncio.sleep(0.1)
    assert 2 <= answers.count(200) <= 3 and answers.count(304) == len(answers) - answers.count(200), answers
    assert (await bare_get(served, link))[0] == 200


async def test_tampered_links_and_deleted_files(served, user, make_user) -> None:
    other = await make_user()
    file_id = await upload(served, user, b"plain text, not an image\n" * 100, "notes.txt")
    file = await wait_for_status(served, user, file_id)
    link = file["content_url"]
    assert file["thumbnail_url"] is None
    status, headers, body = await bare_get(served, link + "&disposition=inline")  # not an image: stays a download
    assert status == 200 and headers["Content-Disposition"].startswith("attachment;")
    assert (await bare_get(served, link + "&disposition=sideways"))[0] == 422
    params = parse_qs(urlsplit(link).query)
    tampered = [
        link.replace(f"u={user.id}", f"u={other.id}"),  # another user
        link.replace(f"exp={params['exp'][0]}", f"exp={int(params['exp'][0]) + 3600}"),  # longer life
        link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"),  # the signature
        link.replace("/content?", "/events?"),  # another purpose
        f"/api/files/{file_id}/content?sig=x",
        f"/api/files/{file_id}/content?u=&exp=&sig=",
        f"/api/files/{file_id}/content?u={user.id}&exp=%C2%B9&sig=x",  # "¹" is a digit to str.isdigit() (was a 500)
    ]
    for bad in tampered:
        status, headers, body = await bare_get(served, bad)
        assert status == 403 and b"LINK_INVALID" in body, bad
    # The signature is the grant, not ownership: another user's bearer token cannot use the path...
    assert (await served.get(f"/api/files/{file_id}/content", headers=other.headers)).status == 404
    assert (await served.delete(f"/api/files/{file_id}", headers=user.headers)).status == 204
    status, _, body = await bare_get(served, link)
    assert status == 404 and b"FILE_NOT_FOUND" in body


async def test_post_readers_get_signed_links_to_the_authors_files(served, user, make_user) -> None:
    reader = await make_user()
    data = jpeg(300, 200)
    file_id = await upload(served, user, data, "shared.jpg")
    await wait_for_status(served, user, file_id)
    r = await served.post(
        "/api/posts", headers=user.headers, json={"title": "Look", "published": True, "file_ids": [file_id]}
    )
    post_id = (await r.json())["id"]
    r = await served.get("/api/posts", headers=reader.headers)
    [listed] = [p for p in (await r.json())["posts"] if p["id"] == post_id]
    [attached] = listed["files"]
    assert f"u={reader.id}" in attached["url"]  # made for the reader
    status, _, body = await bare_get(served, attached["url"])
    assert status == 200 and sha256(body) == sha256(data)
    status, headers, _ = await bare_get(served, attached["thumbnail_url"])
    assert status == 200 and headers["Content-Type"].startswith("image/")
    r = await served.get(f"/api/posts/{post_id}", headers=reader.headers)
    assert (await bare_get(served, (await r.json())["files"][0]["url"]))[0] == 200
    # A published post's reader may fetch its files with a bearer token too (issue 11's access rule; drafts
    # stay owner/admin, see test_truthful_views), but the file's own status view stays the owner's.
    assert (await served.get(f"/api/files/{file_id}/content", headers=reader.headers)).status == 200
    assert (await served.get(f"/api/files/{file_id}", headers=reader.headers)).status == 404
