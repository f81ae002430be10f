"""Helpers of the IETF resumable-upload tests: a raw HTTP/1.1 exchange that sees interim (104) responses,
and the draft's fields as a client sends them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_sf

from service.app import create_app
from tests.support import RawRequest
from tests.tus_support import protocol_settings

DRAFT = {"Upload-Draft-Interop-Version": "8"}
PARTIAL = {"Content-Type": "application/partial-upload"}
PROBLEMS = "https://iana.org/assignments/http-problem-types#"


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names; a repeated field keeps its last value
    body: bytes = b""
    interim: list[Response] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)

    def sf(self, name: str, kind: str = "item") -> Any:
        """A structured field of the response, parsed as a client of the draft would."""
        return http_sf.parse(self.headers[name.lower()].encode(), tltype=kind)


class Exchange(RawRequest):
    """support.RawRequest that reads every response to its request as a client of the draft must:
    1xx interim ones first, then the final one with its body."""

    async def interim(self, timeout: float = 10) -> Response:
        """The next response, which must be an interim one."""
        response = await self._one(timeout)
        assert 100 <= response.status < 200, (response.status, response.body)
        return response

    async def final(self, timeout: float = 20) -> Response:
        """The final response, with the interim ones that came before it."""
        interim: list[Response] = []
        while True:
            response = await self._one(timeout)
            if response.status >= 200:
                response.interim = interim
                return response
            interim.append(response)

    async def _one(self, timeout: float) -> Response:
        status_line = await asyncio.wait_for(self.reader.readline(), timeout)
        assert status_line, "the server closed the connection without answering"
        _, status, reason = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await asyncio.wait_for(self.reader.readline(), timeout)) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        response = Response(int(status), reason, headers)
        if response.status >= 200 and self.method != "HEAD" and response.status not in (204, 304):
            length = int(headers.get("content-length", "0"))
            response.body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return response


async def open_append(server, user, path: str, length: int, *, complete: bool) -> Exchange:
    """The draft's append from offset 0 announcing `length` bytes of content and sending none yet."""
    return await Exchange.open(
        server,
        "PATCH",
        path,
        {
            **user.headers,
            **DRAFT,
            **PARTIAL,
            "Upload-Offset": "0",
            "Upload-Complete": "?1" if complete else "?0",
            "Content-Length": str(length),
        },
    )


async def exchange(
    server,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> Response:
    """A whole request and its responses."""
    request = await Exchange.open(server, method, path, {**headers, "Content-Length": str(len(body))}, version)
    try:
        await request.send(body)
        return await request.final()
    finally:
        await request.close()


def path_of(location: str) -> str:
    return "/api/tus/" + location.rstrip("/").rsplit("/", 1)[-1]


def id_of(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


async def create(
    server,
    user,
    body: bytes = b"",
    complete: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    return await exchange(
        server,
        "POST",
        "/api/tus/",
        {**user.headers, **DRAFT, "Upload-Complete": "?1" if complete else "?0", **(headers or {})},
        body,
    )


async def append(
    server,
    user,
    path: str,
    offset: int,
    body: bytes,
    complete: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    return await exchange(
        server,
        "PATCH",
        path,
        {
            **user.headers,
            **DRAFT,
            **PARTIAL,
            "Upload-Offset": str(offset),
            "Upload-Complete": "?1" if complete else "?0",
            **(headers or {}),
        },
        body,
    )


async def head(server, user, path: str) -> Response:
    return await exchange(server, "HEAD", path, {**user.headers, **DRAFT})


async def wait_processed(server, user, file_id: str, timeout: float = 30) -> dict[str, Any]:
    """The file once the worker is done with it (long-polling /api/files/{id})."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await server.get(f"/api/files/{file_id}?wait=5", headers=user.headers)
        view = await r.json()
        if view["status"] in ("COMPLETED", "FAILED"):
            return view
        assert asyncio.get_running_loop().time() < deadline, f"file still {view['status']}"


def rufh_app(database_url: str, storage_dir: Path, **env: str):
    return create_app(protocol_settings(database_url, storage_dir, **env), with_worker=True)
