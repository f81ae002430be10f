"""The files API: ETag/304, long-poll, server-sent events, Range downloads, thumbnails, list, delete."""

from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import quote

from service import storage
from tests.support import insert_file, on_both_stores, stored_keys
from tests.uploading import UPLOAD_ENV, create, jpeg, put_chunks, upload, wait_for_status

SETTINGS_ENV = UPLOAD_ENV


async def completed(served, user, data: bytes, name: str = "file.bin") -> dict:
    body = await wait_for_status(served, user, await upload(served, user, data, name))
    assert body["status"] == "COMPLETED", body["error"]
    return body


async def test_etag_and_304(client, user, conn) -> None:
    created = await create(client, user, os.urandom(10))
    r = await client.get(f"/api/files/{created['id']}", headers=user.headers)
    body = await r.json()
    assert r.status == 200 and body["status"] == "UPLOADING" and body["original_name"] == "file.bin"
    assert {
        "id",
        "status",
        "type",
        "mimetype",
        "size",
        "original_name",
        "url",
        "thumbnail",
        "metadata",
        "error",
        "created_at",
        "updated_at",
    } <= set(body)
    etag = r.headers["ETag"]
    r = await client.get(f"/api/files/{created['id']}", headers={**user.headers, "If-None-Match": etag})
    assert r.status == 304 and r.headers["ETag"] == etag and await r.read() == b""
    await conn.execute("UPDATE files SET status = 'FAILED', error = 'x' WHERE id = $1", created["id"])
    r = await client.get(f"/api/files/{created['id']}", headers={**user.headers, "If-None-Match": etag})
    assert r.status == 200 and r.headers["ETag"] != etag and (await r.json())["status"] == "FAILED"


async def test_an_unchanged_file_answers_304_to_every_poll(served, user, make_user, admin) -> None:
    """A completed file's view carries signed links; they are not what its ETag is made of, so a poller
    gets 304 for as long as the file is unchanged, and a change (here: attached to a post) a 200 with
    a new ETag."""
    file = await completed(served, user, os.urandom(1000))
    url = f"/api/files/{file['id']}"
    r = await served.get(url, headers=user.headers)
    etag = r.headers["ETag"]
    assert (await r.json())["content_url"]
    for _ in range(20):
        r = await served.get(url, headers={**user.headers, "If-None-Match": etag})
        assert r.status == 304 and r.headers["ETag"] == etag and await r.read() == b""
    # Another viewer (an admin) gets links signed for them, so an ETag of their own.
    r = await served.get(url, headers={**admin.headers, "If-None-Match": etag})
    assert r.status == 200 and r.headers["ETag"] != etag and f"u={admin.id}" in (await r.json())["content_url"]
    # A change of the file's state: the post it is attached to.
    r = await served.post("/api/posts", headers=user.headers, json={"title": "t", "file_ids": [file["id"]]})
    post_id = (await r.json())["id"]
    r = await served.get(url, headers={**user.headers, "If-None-Match": etag})
    assert r.status == 200 and r.headers["ETag"] != etag and (await r.json())["post_id"] == post_id
    etag = r.headers["ETag"]
    r = await served.get(url, headers={**user.headers, "If-None-Match": f'"other", W/{etag}'})
    assert r.status == 304


async def test_long_poll_returns_as_soon_as_the_status_changes(client, user) -> None:
    data = os.urandom(1000)
    created = await create(client, user, data)
    url = f"/api/files/{created['id']}"
    etag = (await client.get(url, headers=user.headers)).headers["ETag"]

    started = time.monotonic()
    r = await client.get(url, params={"wait": "1"}, headers={**user.headers, "If-None-Match": etag})
    assert r.status == 304 and 0.9 < time.monotonic() - started < 3  # nothing changed within the wait

    poll = asyncio.create_task(client.get(url, params={"wait": "30"}, headers={**user.headers, "If-None-Match": etag}))
    await asyncio.sleep(0.3)
    assert not poll.done()
    started = time.monotonic()
    await put_chunks(client, user, created, data)
    assert (await client.post(f"/api/uploads/{created['id']}/complete", headers=user.headers)).status == 202
    r = await poll
    assert r.status == 200 and (await r.json())["status"] == "PROCESSING"
    assert time.monotonic() - started < 2  # woken by NOTIFY, not by the 5 s fallback poll

    for bad in ("61", "-1", "soon", "nan"):
        r = await client.get(url, params={"wait": bad}, headers=user.headers)
        assert r.status == 422 and (await r.json())["field"] == "wait"


async def test_long_poll_on_a_finished_file_answers_at_once(client, user, conn) -> None:
    file_id = (await insert_file(conn, user.id, status="COMPLETED", type="OTHER", size=1))["id"]
    started = time.monotonic()
    r = await client.get(f"/api/files/{file_id}", params={"wait": "30"}, headers=user.headers)
    assert r.status == 200 and time.monotonic() - started < 1


async def read_event(response) -> tuple[str, dict]:
    kind, data = "", ""
    while True:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode()
        if line.startswith("event: "):
            kind = line[7:].strip()
        elif line.startswith("data: "):
            data = line[6:].strip()
        elif line == "\n" and kind:
            return kind, json.loads(data)


async def test_server_sent_events_follow_the_status(client, user, conn) -> None:
    data = os.urandom(1000)
    created = await create(client, user, data)
    async with client.get(f"/api/files/{created['id']}/events", headers=user.headers) as events:
        assert events.status == 200 and events.headers["Content-Type"] == "text/event-stream"
        assert await read_event(events) == ("status", (await read_event_body(client, user, created["id"])))
        await put_chunks(client, user, created, data)
        await client.post(f"/api/uploads/{created['id']}/complete", headers=user.headers)
        kind, body = await read_event(events)
        assert kind == "status" and body["status"] == "PROCESSING"
        await conn.execute("UPDATE files SET status = 'COMPLETED' WHERE id = $1", created["id"])
        kind, body = await read_event(events)
        assert kind == "status" and body["status"] == "COMPLETED"
        assert await asyncio.wait_for(events.content.read(), 5) == b""  # the stream ends with the file

    other = await create(client, user, data)
    async with client.get(f"/api/files/{other['id']}/events", headers=user.headers) as events:
        assert (await read_event(events))[0] == "status"
        await conn.execute("DELETE FROM files WHERE id = $1", other["id"])
        assert await read_event(events) == ("deleted", {"id": other["id"]})


async def read_event_body(client, user, file_id: str) -> dict:
    return await (await client.get(f"/api/files/{file_id}", headers=user.headers)).json()


@on_both_stores
async def test_content_range_and_safe_headers(served, user) -> None:
    data = os.urandom(300_000)
    name = 'résumé "final"; 100%\\ 東京.pdf'
    body = await completed(served, user, data, name)
    r = await served.get(body["url"], headers=user.headers)
    assert r.status == 200 and await r.read() == data
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="r_sum_ _final__ 100__ __.pdf"; ')
    assert disposition.endswith("filename*=UTF-8''" + quote(name, safe=""))

    r = await served.get(body["url"], headers={**user.headers, "Range": "bytes=1000-1999"})
    assert r.status == 206 and await r.read() == data[1000:2000]
    assert r.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    r = await served.get(body["url"], headers={**user.headers, "Range": "bytes=-10"})
    assert r.status == 206 and await r.read() == data[-10:]
    r = await served.get(body["url"], headers={**user.headers, "Range": f"bytes={len(data)}-"})
    assert r.status == 416


@on_both_stores
async def test_another_users_file_is_404_everywhere(served, user, make_user, admin, settings) -> None:
    body = await completed(served, user, jpeg(64, 48), "p.jpg")
    stranger = await make_user()
    paths = ["", "/content", "/thumbnail", "/events"]
    for path in paths:
        r = await served.get(f"/api/files/{body['id']}{path}", headers=stranger.headers)
        assert r.status == 404 and (await r.json())["code"] == "FILE_NOT_FOUND", path
        r = await served.get(f"/api/files/{body['id']}{path}", headers=admin.headers)
        assert r.status == 200, path
        r.close()
    assert (await served.delete(f"/api/files/{body['id']}", headers=stranger.headers)).status == 404
    assert (await served.get("/api/files/no-such-id", headers=user.headers)).status == 404

    filename = storage.owner_of(next(iter(await stored_keys(settings))))
    assert filename is not None
    assert await stored_keys(settings) == {storage.blob_key(filename), storage.thumbnail_key(filename, "image/webp")}
    r = await served.delete(f"/api/files/{body['id']}", headers=user.headers)
    assert r.status == 204
    assert await stored_keys(settings) == set()
    assert (await served.get(f"/api/files/{body['id']}", headers=user.headers)).status == 404


async def test_list_filters_and_pages(client, user, make_user, admin, conn) -> None:
    mine = [
        (await insert_file(conn, user.id, status=s, type=t, size=1))["id"]
        for s, t in [
            ("COMPLETED", "IMAGE"),
            ("COMPLETED", "DOCUMENT"),
            ("FAILED", "IMAGE"),
            ("UPLOADING", "OTHER"),
            ("COMPLETED", "IMAGE"),
        ]
    ]
    other = await make_user()
    await insert_file(conn, other.id, status="COMPLETED", type="IMAGE", size=1)

    async def listing(who, **params):
        r = await client.get("/api/files", params=params, headers=who.headers)
        assert r.status == 200, await r.text()
        return await r.json()

    everything = await listing(user)
    assert {f["id"] for f in everything["files"]} == set(mine)
    assert everything["pagination"] == {"page": 1, "limit": 10, "total": 5, "pages": 1}  # as every list
    assert (await listing(user, limit="500"))["pagination"]["limit"] == 100  # capped, as posts and users
    images = await listing(user, status="COMPLETED", type="image")
    assert len(images["files"]) == 2 and all(
        f["type"] == "IMAGE" and f["status"] == "COMPLETED" for f in images["files"]
    )
    page2 = await listing(user, limit="2", page="2")
    assert page2["pagination"] == {"page": 2, "limit": 2, "total": 5, "pages": 3}
    assert [f["id"] for f in page2["files"]] == [f["id"] for f in everything["files"][2:4]]
    assert (await listing(admin))["pagination"]["total"] == 6  # an admin sees every user's files
    for bad in ({"status": "DONE"}, {"type": "PICTURE"}, {"page": "0"}, {"limit": "0"}, {"limit": "x"}):
        r = await client.get("/api/files", params=bad, headers=user.headers)
        assert r.status == 422 and (await r.json())["code"] == "VALIDATION_FAILED", bad
