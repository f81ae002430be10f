"""The CLI's account commands: `chunkd login` mints an API token and saves it; `chunkd token ...` manages
tokens with it; `chunkd upload` uses it when given no --token or --email.

Saved tokens live in credentials.json beside the uploads' state (XDG_STATE_HOME/chunkd), one per
server URL, mode 0600 in a 0700 directory: anyone who can read it can act as the user."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from service.client import default_state_dir, unreachable

CREDENTIALS = "credentials.json"
TIMEOUT = aiohttp.ClientTimeout(total=60)


class AccountError(Exception):
    """A command of the account group failed; the message is one line saying why."""


def credentials_path(state_dir: Path | None = None) -> Path:
    return (state_dir or default_state_dir().parent) / CREDENTIALS


def saved_token(url: str, state_dir: Path | None = None) -> str | None:
    """The token `chunkd login` saved for this server, if any."""
    try:
        saved = json.loads(credentials_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    entry = saved.get(url.rstrip("/")) if isinstance(saved, dict) else None
    return entry.get("token") if isinstance(entry, dict) else None


def save_token(url: str, email: str, token: str, state_dir: Path | None = None) -> Path:
    path = credentials_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    saved[url.rstrip("/")] = {"email": email, "token": token}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")  # created 0600
    with os.fdopen(fd, "w") as f:
        json.dump(saved, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


async def login(url: str, email: str, password: str, scopes: list[str]) -> dict[str, Any]:
    """Logs in, mints an API token for this machine with the session, then ends the session: the CLI
    keeps no refresh token (whose rotation two concurrent commands would trip over as reuse)."""
    async with aiohttp.ClientSession(url.rstrip("/"), timeout=TIMEOUT) as http:
        session = await _call(
            http, "POST", "/api/auth/login", None, {"email": email, "password": password, "device": "chunkd login"}
        )
        return await _token_for_session(http, session["access_token"], scopes)


async def _token_for_session(http: aiohttp.ClientSession, access: str, scopes: list[str]) -> dict[str, Any]:
    """An API token for this machine, minted with a session that is then ended."""
    try:
        return await _call(
            http, "POST", "/api/tokens", access, {"name": f"chunkd CLI on {socket.gethostname()}", "scopes": scopes}
        )
    finally:
        await _call(http, "POST", "/api/auth/logout", access, None, expect=204)


async def register(url: str, email: str, password: str, name: str | None, scopes: list[str]) -> dict[str, Any]:
    """Creates the account (which starts a session), then mints and returns an API token as login() does."""
    async with aiohttp.ClientSession(url.rstrip("/"), timeout=TIMEOUT) as http:
        body = {"email": email, "password": password, "name": name, "device": "chunkd register"}
        session = await _call(http, "POST", "/api/auth/register", None, body)
        return await _token_for_session(http, session["access_token"], scopes)


async def create_token(url: str, token: str, name: str, scopes: list[str], expires_in: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "scopes": scopes}
    if expires_in is not None:
        body["expires_in"] = expires_in
    async with aiohttp.ClientSession(url.rstrip("/"), timeout=TIMEOUT) as http:
        return await _call(http, "POST", "/api/tokens", token, body)


async def list_tokens(url: str, token: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(url.rstrip("/"), timeout=TIMEOUT) as http:
        return (await _call(http, "GET", "/api/tokens", token, None))["tokens"]


async def revoke_token(url: str, token: str, token_id: str) -> None:
    async with aiohttp.ClientSession(url.rstrip("/"), timeout=TIMEOUT) as http:
        await _call(http, "DELETE", f"/api/tokens/{token_id}", token, None, expect=204)


async def _call(
    http: aiohttp.ClientSession, method: str, path: str, token: str | None, body: Any, expect: int | None = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with http.request(method, path, json=body, headers=headers) as response:
            if response.status >= 400:
                try:
                    problem = await response.json(content_type=None)
                except ValueError:
                    problem = {}
                detail = problem.get("detail", response.reason) if isinstance(problem, dict) else response.reason
                raise AccountError(f"{method} {path}: {response.status} {detail}")
            if (expect is not None and response.status == expect) or response.status == 204:
                return None
            return await response.json()
    except aiohttp.ClientConnectorError as e:
        raise AccountError(unreachable(f"{e.host}:{e.port}", e)) from None
    except (aiohttp.ClientError, TimeoutError) as e:
        raise AccountError(f"{method} {path}: {e or type(e).__name__}") from None
