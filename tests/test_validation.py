"""service.validation through a real route: what a handler gets, and what the client is told."""

from __future__ import annotations

import re
import unicodedata

from aiohttp import web

from service.app import create_app
from service.config import Settings
from service.validation import HIDDEN, WHITESPACE, Field, read_json, read_page

SCHEMA = (
    Field("name", str, required=True, min_len=3, max_len=5),
    Field("size", int, minimum=1, maximum=10),
    Field("kind", str, choices=("a", "b")),
    Field("tags", list, max_len=2, items=Field("tag", str, max_len=3)),
    Field("note", str, nullable=True),
)


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"body": await read_json(request, *SCHEMA), **read_page(request).pagination(95)})


async def test_read_json_and_read_page(aiohttp_client, settings: Settings) -> None:
    app = create_app(settings)
    app.router.add_post("/test/echo", echo)
    client = await aiohttp_client(app)
    r = await client.post("/test/echo?page=2&limit=20", json={"name": "abc", "size": 10, "note": None})
    assert r.status == 200
    assert await r.json() == {
        "body": {"name": "abc", "size": 10, "note": None},  # absent fields stay absent
        "page": 2,
        "limit": 20,
        "total": 95,
        "pages": 5,
    }
    refused = [
        ({"name": "ab"}, "name", "at least 3"),
        ({"name": "   "}, "name", "blank"),
        ({"name": "abcdef"}, "name", "at most 5"),
        ({"name": "abc", "size": 0}, "size", "at least 1"),
        ({"name": "abc", "size": 11}, "size", "at most 10"),
        ({"name": "abc", "size": True}, "size", "integer"),
        ({"name": "abc", "size": 1.5}, "size", "integer"),
        ({"name": "abc", "kind": "c"}, "kind", "one of a, b"),
        ({"name": "abc", "tags": ["x", "y", "z"]}, "tags", "at most 2 items"),
        ({"name": "abc", "tags": ["long"]}, "tags[0]", "at most 3"),
        ({"name": None}, "name", "null"),
    ]
    for payload, field, detail in refused:
        r = await client.post("/test/echo", json=payload)
        body = await r.json()
        assert r.status == 422 and body["field"] == field and detail in body["detail"], (payload, body)


def test_the_published_character_classes_are_pythons() -> None:
    """HIDDEN and WHITESPACE are spelled out (for /openapi.json's patterns): they must be what Python's
    unicodedata and str.isspace() say, or the server and its description disagree."""
    hidden, space = re.compile(f"[{HIDDEN}]"), re.compile(f"[{WHITESPACE}]")
    for code in range(0x110000):
        char = chr(code)
        category = unicodedata.category(char)
        if category == "Cs":
            continue  # surrogates are no text (check_text refuses them before any pattern)
        assert bool(hidden.fullmatch(char)) == (category in ("Cc", "Cf", "Zl", "Zp")), hex(code)
        assert bool(space.fullmatch(char)) == char.isspace(), hex(code)
