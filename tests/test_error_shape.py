"""Every error is RFC 9457 problem+json with a stable code: ours, the router's, and unhandled ones."""

from __future__ import annotations

import inspect
import io

import pytest
from aiohttp import web

from service import errors
from service.app import create_app
from service.config import Settings

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def assert_problem(body: dict, status: int, code: str) -> None:
    assert set(body) >= PROBLEM_KEYS
    assert body["status"] == status and body["code"] == code
    assert body["type"] == "about:blank" and body["title"] and body["detail"]


@pytest.fixture
async def app_client(aiohttp_client, settings: Settings):
    app = create_app(settings)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    app.router.add_get("/test/boom", boom)
    app.router.add_post("/test/echo", echo)
    return await aiohttp_client(app)


async def test_unknown_route_is_a_404_problem(app_client) -> None:
    r = await app_client.get("/no/such/route")
    assert r.status == 404 and r.content_type == "application/problem+json"
    assert_problem(await r.json(), 404, "NOT_FOUND")


async def test_wrong_method_is_a_405_problem_with_allow(app_client) -> None:
    r = await app_client.delete("/healthz")
    assert r.status == 405 and r.content_type == "application/problem+json"
    assert "GET" in r.headers["Allow"]
    assert_problem(await r.json(), 405, "METHOD_NOT_ALLOWED")


async def test_unhandled_error_is_a_500_problem_without_internals(app_client) -> None:
    r = await app_client.get("/test/boom")
    text = await r.text()
    assert r.status == 500 and r.content_type == "application/problem+json"
    assert "secret internal detail" not in text and "Traceback" not in text
    assert_problem(await r.json(), 500, "INTERNAL")


async def test_oversized_json_body_is_a_413_problem(app_client) -> None:
    r = await app_client.post(
        "/test/echo", data=io.BytesIO(b"[" + b"1," * 600_000 + b"1]"), headers={"Content-Type": "application/json"}
    )
    assert r.status == 413 and r.content_type == "application/problem+json"
    assert_problem(await r.json(), 413, "PAYLOAD_TOO_LARGE")


def test_every_error_class_renders_the_shape() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.ApiError)]
    assert len(classes) > 5
    codes = set()
    for cls in classes:
        response = errors.problem_response(cls("why"))
        assert response.status == cls.status and response.content_type == "application/problem+json"
        assert cls.code.isupper() and cls.code.replace("_", "").isalnum()
        codes.add(cls.code)
    assert len(codes) == len(classes), "two error classes share a code"
