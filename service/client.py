"""`chunkd upload`: a resumable client of the native upload protocol.

The upload id is kept in a small state file keyed by the file's absolute path, size and mtime (and the
server URL), written before the first chunk is sent. Killed and run again, the client asks the server which
chunks are missing and sends only those; a changed file gets a new upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import mimetypes
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from service.progress import Progress

DEFAULT_PARALLEL = 4
ATTEMPTS = 6  # per request, for connection errors and 408/429/5xx answers
BACKOFF = 0.5  # seconds, doubled per attempt
WAIT_SECONDS = 30  # long-poll of GET /api/files/{id}?wait=
HASH_BUFFER = 1024 * 1024
TERMINAL = ("COMPLETED", "FAILED")
RETRYABLE = (408, 429, 500, 502, 503, 504)


class UploadError(Exception):
    """The upload cannot go on; the message is one line saying why."""


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    email: str | None = None
    password: str | None = None


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "chunkd" / "uploads"


def state_file(state_dir: Path, url: str, path: Path) -> Path:
    info = path.stat()
    key = json.dumps([url.rstrip("/"), str(path.resolve()), info.st_size, info.st_mtime_ns])
    return state_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


class Api:
    """JSON over aiohttp with the Bearer token; retries what is worth retrying. With --email it logs in
    once (a session of its own, so the user's other devices are untouched), refreshes within that
    session when the access token expires, and ends the session when done."""

    def __init__(self, session: aiohttp.ClientSession, url: str, credentials: Credentials) -> None:
        self.session, self.url, self.credentials = session, url.rstrip("/"), credentials
        self.token = credentials.token
        self.refresh_token: str | None = None
        self._renewing = asyncio.Lock()

    async def login(self) -> None:
        if not self.credentials.email:
            raise UploadError("the access token was refused; pass a fresh --token or use --email")
        body = {"email": self.credentials.email, "password": self.credentials.password or "", "device": "chunkd upload"}
        async with self.session.post(f"{self.url}/api/auth/login", json=body) as response:
            answer = await _json(response)
        self.token, self.refresh_token = answer["access_token"], answer["refresh_token"]

    async def renew(self, stale: str | None) -> None:
        """A fresh access token in place of `stale`: one sender renews (a refresh token presented twice
        would revoke the session), the others find the token already changed and use the new one."""
        async with self._renewing:
            if self.token != stale:
                return
            if self.refresh_token:
                body = {"refresh_token": self.refresh_token}
                async with self.session.post(f"{self.url}/api/auth/refresh", json=body) as response:
                    if response.status == 200:
                        answer = await response.json()
                        self.token, self.refresh_token = answer["access_token"], answer["refresh_token"]
                        return
            await self.login()

    async def end_session(self) -> None:
        """Logs out the session login() began; a failure here costs nothing (the session expires)."""
        if self.refresh_token is None:
            return
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, UploadError):
            for _ in range(2):  # the access token may have expired since the last call: renew once
                token = self.token
                async with self.session.post(
                    f"{self.url}/api/auth/logout", headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    if response.status != 401:
                        return
                await self.renew(token)

    async def call(
        self,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """(status, JSON body) of an expected answer, or of a problem worth reporting; retries the rest."""
        if self.token is None:
            await self.renew(None)
        relogged, reason = False, ""
        for attempt in range(ATTEMPTS):
            sent = {**(headers or {}), "Authorization": f"Bearer {self.token}"}
            try:
                async with self.session.request(method, f"{self.url}{path}", headers=sent, **kwargs) as response:
                    if response.status in expect:
                        return response.status, await response.json()
                    if response.status == 401 and self.credentials.email and not relogged:
                        relogged = True  # the access token expired during a long upload
                        await self.renew(sent["Authorization"].removeprefix("Bearer "))
                        continue
                    if response.status not in RETRYABLE:
                        return response.status, await _problem(response)
                    retry_after = response.headers.get("Retry-After", "")
                    delay = float(retry_after) if retry_after.isdigit() else BACKOFF * 2**attempt
                    reason = f"{response.status} {response.reason}"
            except (TimeoutError, aiohttp.ClientConnectionError) as e:
                delay, reason = BACKOFF * 2**attempt, str(e) or type(e).__name__
            await asyncio.sleep(delay)
        raise UploadError(f"{method} {path} failed {ATTEMPTS} times, last: {reason}")


async def _json(response: aiohttp.ClientResponse) -> Any:
    if response.status >= 400:
        problem = await _problem(response)
        raise UploadError(f"{response.status} {problem.get('code', '')}: {problem.get('detail', response.reason)}")
    return await response.json()


async def _problem(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        body = None
    return body if isinstance(body, dict) else {"detail": response.reason}


def _fail(status: int, problem: dict[str, Any]) -> UploadError:
    return UploadError(f"{status} {problem.get('code', '')}: {problem.get('detail', '')}".replace("  ", " "))


async def upload(
    path: Path,
    url: str,
    credentials: Credentials,
    *,
    state_dir: Path,
    chunk_size: int | None = None,
    parallel: int = DEFAULT_PARALLEL,
    verify_chunks: bool = False,
    uploaded: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Upload (or resume) `path`, wait for COMPLETED or FAILED, and return the file as the server shows it.
    The first chunk goes out at once: the whole file's SHA-256 is computed while chunks are sent and given
    at `complete` (the worker checks the assembled file against it). `verify_chunks` also sends each
    chunk's SHA-256, which the server checks before storing it: a damaged chunk is refused at once
    instead of the file failing at the end, for twice the hashing on both sides.
    `uploaded` is called once every byte is stored (complete answered), before processing is awaited."""
    state_path = state_file(state_dir, url, path)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=WAIT_SECONDS + 60)
    hashing = asyncio.ensure_future(asyncio.to_thread(_sha256_file, path))
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = Api(session, url, credentials)
            upload = await _resume(api, state_path)
            if upload is None:
                upload = await _create(api, path, chunk_size)
                _save_state(state_path, {"upload_id": upload["id"], "url": url, "path": str(path.resolve())})
            while upload["status"] == "UPLOADING":
                await _send_missing(api, path, upload, parallel, verify_chunks)
                status, answer = await api.call(
                    "POST", f"/api/uploads/{upload['id']}/complete", expect=(202,), json={"sha256": await hashing}
                )
                if status == 409 and answer.get("code") == "UPLOAD_INCOMPLETE":
                    upload = (await api.call("GET", f"/api/uploads/{upload['id']}"))[1]
                    continue
                if status != 202:
                    raise _fail(status, answer)
                upload["status"] = answer["status"]
            uploaded()
            file = await _wait(api, upload["id"])
            await api.end_session()
    finally:
        hashing.cancel()  # a failed upload: the hash is not awaited (its thread ends by itself)
        if hashing.done() and not hashing.cancelled():
            hashing.exception()
    state_path.unlink(missing_ok=True)
    return file


async def _resume(api: Api, state_path: Path) -> dict[str, Any] | None:
    """The upload a previous run started, with its missing chunks; None to start afresh."""
    try:
        upload_id = json.loads(state_path.read_text())["upload_id"]
    except (OSError, ValueError, KeyError):
        return None
    status, answer = await api.call("GET", f"/api/uploads/{upload_id}")
    if status in (404, 410):  # expired, aborted or cleaned up: start over
        state_path.unlink(missing_ok=True)
        return None
    if status != 200:
        raise _fail(status, answer)
    print(
        f"resuming upload {upload_id}: {len(answer['missing'])} of {answer['total_chunks']} chunks to send",
        file=sys.stderr,
    )
    return answer


async def _create(api: Api, path: Path, chunk_size: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filename": path.name,
        "size": path.stat().st_size,
        "mimetype": mimetypes.guess_type(path.name)[0] or "application/octet-stream",
    }
    if chunk_size:
        body["chunk_size"] = chunk_size
    status, answer = await api.call("POST", "/api/uploads", expect=(201,), json=body)
    if status != 201:
        raise _fail(status, answer)
    return {**answer, "missing": list(range(answer["total_chunks"]))}


async def _send_missing(api: Api, path: Path, upload: dict[str, Any], parallel: int, verify_chunks: bool) -> None:
    size, chunk_size, missing = upload["size"], upload["chunk_size"], list(upload["missing"])
    pending_bytes = sum(min(chunk_size, size - i * chunk_size) for i in missing)
    progress = Progress(f"uploading {path.name}", size, done=size - pending_bytes)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in missing:
        queue.put_nowait(index)

    async def sender() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            data = await asyncio.to_thread(
                _read_chunk, path, index * chunk_size, min(chunk_size, size - index * chunk_size)
            )
            headers = {"Content-Type": "application/octet-stream"}
            if verify_chunks:
                headers["Content-SHA256"] = await asyncio.to_thread(_sha256_hex, data)
            status, answer = await api.call(
                "PUT", f"/api/uploads/{upload['id']}/chunks/{index}", expect=(200, 201), data=data, headers=headers
            )
            if status not in (200, 201):
                raise _fail(status, answer)
            progress.advance(len(data))

    senders = [asyncio.create_task(sender()) for _ in range(max(1, min(parallel, len(missing))))]
    try:
        await asyncio.gather(*senders)
    finally:
        for task in senders:
            task.cancel()
    progress.finish()


async def _wait(api: Api, file_id: str) -> dict[str, Any]:
    print("processing...", file=sys.stderr, flush=True)
    while True:
        status, file = await api.call("GET", f"/api/files/{file_id}?wait={WAIT_SECONDS}")
        if status != 200:
            raise _fail(status, file)
        if file["status"] in TERMINAL:
            return file


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(HASH_BUFFER):
            digest.update(data)
    return digest.hexdigest()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_chunk(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise UploadError(f"{path} shrank while uploading: run again to start a new upload")
    return data


def _save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def password_from(email: str | None) -> str | None:
    """CHUNKD_PASSWORD, or asked on the terminal."""
    if email is None:
        return None
    return os.environ.get("CHUNKD_PASSWORD") or getpass.getpass(f"password for {email}: ")
