"""CORS on the whole /api: preflights answered without a token, allowed origins echoed, tus headers
allowed and exposed, other origins refused."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.config import ConfigError, load_settings
from tests.support import make_settings
from tests.tus_support import TUS

ORIGIN = "https://app.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "PATCH",
    "Access-Control-Request-Headers": "authorization, tus-resumable, upload-offset, content-type",
}


def _names(header: str) -> set[str]:
    return {h.strip().lower() for h in header.split(",")}


async def test_preflight_is_answered_for_an_allowed_origin(tus: TestClient) -> None:
    for path in ("/api/tus/", "/api/tus/some-id", "/api/files/x"):  # the whole API, routed or not
        r = await tus.options(path, headers=PREFLIGHT)
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert {"PATCH", "HEAD", "POST", "DELETE"} <= {
            m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")
        }
        assert {
            "authorization",
            "content-type",
            "tus-resumable",
            "upload-offset",
            "upload-length",
            "upload-metadata",
            "upload-checksum",
            "upload-concat",
            "upload-defer-length",
            "x-http-method-override",
            "x-requested-with",
        } <= _names(r.headers["Access-Control-Allow-Headers"])
        assert int(r.headers["Access-Control-Max-Age"]) > 0


async def test_preflight_from_another_origin_gets_no_permission(tus: TestClient, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="service.cors"):
        r = await tus.options("/api/tus/", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Headers" not in r.headers
    refused = [rec for rec in caplog.records if getattr(rec, "action", None) == "cors_refused"]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING
    assert "https://evil.example" in refused[0].getMessage()


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1:18581/",
        "127.0.0.1:18581",
        "https://app.example/path",
        "https://App.Example",
        "ftp://app.example",
    ],
)
def test_an_origin_that_can_never_match_is_refused_at_start(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({"CORS_ORIGINS": f"https://ok.example, {value}"}, dotenv=None)
    assert str(e.value).startswith("CORS_ORIGINS: ") and repr(value) in str(e.value) and "\n" not in str(e.value)


def test_well_formed_origins_and_the_wildcard_are_accepted() -> None:
    settings = load_settings({"CORS_ORIGINS": "https://app.example, http://127.0.0.1:18581,*"}, dotenv=None)
    assert settings.cors_origins == ("https://app.example", "http://127.0.0.1:18581", "*")


async def test_responses_expose_the_tus_headers(tus: TestClient, user) -> None:
    r = await tus.post("/api/tus/", headers={**user.headers, **TUS, "Origin": ORIGIN, "Upload-Length": "3"})
    assert r.status == 201
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN and "Origin" in r.headers["Vary"]
    assert {
        "location",
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "upload-expires",
        "upload-concat",
        "upload-defer-length",
        "tus-version",
        "tus-resumable",
        "tus-max-size",
        "tus-extension",
    } <= _names(r.headers["Access-Control-Expose-Headers"])
    # error responses too, or a browser could not read why it failed
    r = await tus.post("/api/tus/", headers={**TUS, "Origin": ORIGIN, "Upload-Length": "3"})
    assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    r = await tus.get("/api/nothing-here", headers={**user.headers, "Origin": ORIGIN})
    assert r.status == 404 and r.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_wildcard_allows_any_origin_and_default_allows_none(
    aiohttp_client, database_url, storage_dir, user
) -> None:
    anyone = await aiohttp_client(create_app(make_settings(database_url, storage_dir, CORS_ORIGINS="*")))
    r = await anyone.options("/api/tus/", headers={**PREFLIGHT, "Origin": "https://random.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://random.example"

    nobody = await aiohttp_client(create_app(make_settings(database_url, storage_dir)))
    r = await nobody.options("/api/tus/", headers=PREFLIGHT)
    assert "Access-Control-Allow-Origin" not in r.headers
    r = await nobody.post("/api/tus/", headers={**user.headers, **TUS, "Origin": ORIGIN, "Upload-Length": "3"})
    assert r.status == 201 and "Access-Control-Allow-Origin" not in r.headers
