"""`chunkd upload`: a resumable client of the native upload protocol.

The upload id is kept in a small state file keyed by the file's absolute path, size and mtime (and the
server URL), written before the first chunk is sent. Killed and run again, the client asks the server which
chunks are missing and sends only those; a changed file gets a new upload. A command of several files also
remembers, until all of them are COMPLETED, which are done (a batch file under state_dir/batches), so
running the same command again sends none of them twice.

Before any file is read the server is asked once, without retries, who the credentials belong to: an
unreachable server or refused credentials are one line at once, not a hashed file and 30 s of retries.
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
import threading
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


CHECK_TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=5)  # the first request: fail fast


class UploadError(Exception):
    """The upload cannot go on; the message is one line saying why."""


class ServerGone(UploadError):
    """The server cannot be reached (any more): the files not yet sent would only fail the same way."""


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

    async def check(self) -> None:
        """Fails fast, before any file is read: the server is not there, is not chunkd, or refuses the
        credentials. Asked once, without the retries of call(); a 503 (its database restarting) is left
        to call(), which waits it out as for any request."""
        if self.token is None:
            await self.login(fail_fast=True)
        try:
            async with self.session.get(
                f"{self.url}/api/users/me", headers={"Authorization": f"Bearer {self.token}"}, timeout=CHECK_TIMEOUT
            ) as response:
                status, problem = response.status, await _problem(response)
        except (TimeoutError, aiohttp.ClientConnectionError) as e:
            raise self.unreachable(e) from None
        if status == 401 and not self.credentials.email:
            raise UploadError(
                f"{self.url} refused the access token ({_describe(status, problem)}): "
                "run `chunkd login`, or pass a valid --token (or CHUNKD_TOKEN)"
            )
        if status in (404, 405):
            raise UploadError(
                f"{self.url} does not look like a chunkd server (GET /api/users/me: {status}): check --url"
            )

    def unreachable(self, error: BaseException) -> ServerGone:
        return ServerGone(unreachable(self.url, error))

    async def login(self, *, fail_fast: bool = False) -> None:
        if not self.credentials.email:
            raise UploadError("the access token was refused; pass a fresh --token or use --email")
        email = self.credentials.email
        body = {"email": email, "password": self.credentials.password or "", "device": "chunkd upload"}
        try:
            timeout = CHECK_TIMEOUT if fail_fast else self.session.timeout
            async with self.session.post(f"{self.url}/api/auth/login", json=body, timeout=timeout) as response:
                if response.status >= 400:
                    problem = await _problem(response)
                    raise UploadError(
                        f"{self.url} refused the login of {email} ({_describe(response.status, problem)})"
                    )
                answer = await response.json()
        except (TimeoutError, aiohttp.ClientConnectionError) as e:
            raise self.unreachable(e) from None
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
        relogged, reason, lost = False, "", None
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
                    delay = (
                        float(retry_after) if retry_after.isascii() and retry_after.isdigit() else BACKOFF * 2**attempt
                    )
                    reason = f"{response.status} {response.reason}"
            except (TimeoutError, aiohttp.ClientConnectionError) as e:
                delay, reason, lost = BACKOFF * 2**attempt, str(e) or type(e).__name__, e
            else:
                lost = None
            await asyncio.sleep(delay)
        if lost is not None:
            raise self.unreachable(lost)
        raise UploadError(f"{method} {path} failed {ATTEMPTS} times, last: {reason}")


async def _problem(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        body = None
    return body if isinstance(body, dict) else {"detail": response.reason}


def unreachable(url: str, error: BaseException) -> str:
    """The one line for a server that cannot be reached: where, why, what to do."""
    if isinstance(error, aiohttp.ClientConnectorError):  # its str() repeats the host and adds ssl:default
        reason = os.strerror(error.os_error.errno) if error.os_error.errno else str(error.os_error)
    elif isinstance(error, TimeoutError):
        reason = "no answer in time"
    else:
        reason = str(error) or type(error).__name__
    return (
        f"cannot reach chunkd at {url} ({reason}): start it (`make run` or `.venv/bin/chunkd serve`), "
        "or point --url, CHUNKD_URL or HOST/PORT in .env at it"
    )


def _describe(status: int, problem: dict[str, Any]) -> str:
    return f"{status} {problem.get('code', '')}: {problem.get('detail', '')}".replace("  ", " ")


def _fail(status: int, problem: dict[str, Any]) -> UploadError:
    return UploadError(_describe(status, problem))


@dataclass
class Outcome:
    """What became of one file of a command: the file as the server shows it, or why it was not sent."""

    path: Path
    file: dict[str, Any] | None = None
    error: str | None = None
    earlier: bool = False  # COMPLETED by an earlier, interrupted run of the same command

    @property
    def completed(self) -> bool:
        return self.file is not None and self.file["status"] == "COMPLETED"


def session(timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=timeout or aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=WAIT_SECONDS + 60)
    )


async def upload(path: Path, url: str, credentials: Credentials, **options: Any) -> dict[str, Any]:
    """Upload (or resume) one file with upload_one's options (state_dir, parallel, ...), wait for COMPLETED
    or FAILED, and return the file as the server shows it (bench/compare.py; the CLI uses upload_many)."""
    async with session() as http:
        api = Api(http, url, credentials)
        await api.check()
        file = await upload_one(api, path, **options)
        await api.end_session()
    return file


def expand(arguments: list[str]) -> list[Path]:
    """The files named, and those under the directories named (recursively, in name order); symlinks to
    directories are not followed. Raises UploadError for an argument that is neither."""
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                files += [Path(root, name) for name in sorted(names) if Path(root, name).is_file()]
        else:
            raise UploadError(f"{argument}: no such file or directory")
    return files


async def upload_many(
    arguments: list[str],
    url: str,
    credentials: Credentials,
    *,
    state_dir: Path,
    report: Callable[[Outcome], None],
    **options: Any,
) -> list[Outcome]:
    """Every file of `arguments`, one upload each, one after another; `report` is called as each ends.
    A file that fails does not stop the others; a server that cannot be reached any more does (the
    rest are reported not sent). Files an earlier, interrupted run of the same command finished are
    not sent again."""
    files = expand(arguments)
    if not files:
        raise UploadError(f"no files in {' '.join(arguments)}")
    batch = Batch(state_dir, url, arguments) if len(files) > 1 else None
    outcomes: list[Outcome] = []
    async with session() as http:
        api = Api(http, url, credentials)
        await api.check()
        for index, path in enumerate(files):
            outcome = Outcome(path)
            try:
                earlier = await batch.completed(api, path) if batch else None
                if earlier is not None:
                    outcome.file, outcome.earlier = earlier, True
                else:
                    outcome.file = await upload_one(api, path, state_dir=state_dir, **options)
            except ServerGone as e:
                rest = [Outcome(path, error=str(e))] + [Outcome(p, error="not sent") for p in files[index + 1 :]]
                for o in rest:
                    outcomes.append(o)
                    report(o)
                break
            except (UploadError, OSError) as e:
                outcome.error = str(e)
            if batch and outcome.file is not None and outcome.completed and not outcome.earlier:
                batch.done(path, outcome.file["id"])
            outcomes.append(outcome)
            report(outcome)
        await api.end_session()
    if batch and all(o.completed for o in outcomes):
        batch.forget()
    return outcomes


class Batch:
    """Which files of a command of several are COMPLETED, kept until all of them are: the same command
    run again (after Ctrl-C, a lost server or a failed file) sends only the others. A file counts as
    done while its size and mtime are those it had when it was sent, and the server still has it."""

    def __init__(self, state_dir: Path, url: str, arguments: list[str]) -> None:
        key = json.dumps([url.rstrip("/"), [str(Path(a).resolve()) for a in arguments]])
        self.path = state_dir / "batches" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
        try:
            self.files: dict[str, Any] = json.loads(self.path.read_text())["files"]
        except (OSError, ValueError, KeyError):
            self.files = {}

    async def completed(self, api: Api, path: Path) -> dict[str, Any] | None:
        entry = self.files.get(str(path.resolve()))
        info = path.stat()
        if not entry or [entry["size"], entry["mtime_ns"]] != [info.st_size, info.st_mtime_ns]:
            return None
        status, file = await api.call("GET", f"/api/files/{entry['file_id']}")
        return file if status == 200 and file["status"] == "COMPLETED" else None

    def done(self, path: Path, file_id: str) -> None:
        info = path.stat()
        self.files[str(path.resolve())] = {"file_id": file_id, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
        _save_state(self.path, {"files": self.files})

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


async def upload_one(
    api: Api,
    path: Path,
    *,
    state_dir: Path,
    chunk_size: int | None = None,
    parallel: int = DEFAULT_PARALLEL,
    verify_chunks: bool = False,
    uploaded: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Upload (or resume) `path` on a checked Api, wait for COMPLETED or FAILED, and return the file as
    the server shows it. The first chunk goes out at once: the whole file's SHA-256 is computed while
    chunks are sent and given at `complete` (the worker checks the assembled file against it).
    `verify_chunks` also sends each chunk's SHA-256, which the server checks before storing it: a
    damaged chunk is refused at once instead of the file failing at the end, for twice the hashing on
    both sides. `uploaded` is called once every byte is stored (complete answered), before processing
    is awaited."""
    url = api.url
    state_path = state_file(state_dir, url, path)
    stop_hashing = threading.Event()
    hashing = asyncio.ensure_future(asyncio.to_thread(_sha256_file, path, stop_hashing))
    try:
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
    finally:
        # A failed or interrupted upload: the hash is not awaited, and its thread stops at the next buffer
        # (asyncio.run waits for the executor's threads: Ctrl-C would otherwise wait for a whole file's hash).
        stop_hashing.set()
        hashing.cancel()
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


def _sha256_file(path: Path, stop: threading.Event) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while (data := f.read(HASH_BUFFER)) and not stop.is_set():
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


def password_from(email: str | None, *, confirm: bool = False) -> str | None:
    """CHUNKD_PASSWORD; else asked on the terminal (twice with `confirm`); else the first line of stdin
    (`... < file`, a pipe): never a command-line argument, which other users of the machine can see."""
    if email is None:
        return None
    if os.environ.get("CHUNKD_PASSWORD"):
        return os.environ["CHUNKD_PASSWORD"]
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"password for {email}: ")
    if confirm and getpass.getpass("again: ") != password:
        raise UploadError("the two passwords differ")
    return password
