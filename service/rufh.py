"""Resumable Uploads for HTTP (draft-ietf-httpbis-resumable-upload, "RUFH"): the protocol's constants,
its structured fields, limits, digests and the 104 informational response. No SQL here: handlers/rufh.py
uses it, the append routine (service/append.py) runs the upload's checks with it.

Implemented: the editor's copy after draft -11 (interop version 8); interop version 7 (drafts -06 to
-08) is accepted as well, since a server's side of it differs only in what version the 104 names."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import collapse_rfc2231_value

import http_sf
from aiohttp import web
from aiohttp.http import HttpVersion11

from service.config import Settings
from service.errors import (
    DigestInvalidValue,
    DigestMismatch,
    DigestUnsupportedAlgorithm,
    RufhInteropVersionUnsupported,
    ValidationFailed,
)
from service.models import FileHints
from service.tus import file_hints, is_rufh
from service.tus_body import Progress

__all__ = ["is_rufh"]  # decided where the shared path's rules are (service/tus.py)

INTEROP_VERSION = 8
INTEROP_VERSIONS = (7, 8)  # what a request's Upload-Draft-Interop-Version may say
PARTIAL_UPLOAD = "application/partial-upload"
INTEROP_HEADER = "Upload-Draft-Interop-Version"

DIGESTS: dict[str, Callable[[], hashlib._Hash]] = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
# Repr-Digest is checked by the worker, which hashes the assembled file with SHA-256 anyway.
REPR_DIGESTS = ("sha-256",)


def interop_version(request: web.Request) -> int | None:
    """The client's interop version; None when it sent none (a client of the final RFC). A version this
    server does not speak is refused rather than half-understood."""
    raw = _field(request, INTEROP_HEADER)
    if raw is None:
        return None
    value = _item(raw)
    if type(value) is not int or value not in INTEROP_VERSIONS:
        raise RufhInteropVersionUnsupported(
            f"{INTEROP_HEADER}: {raw[:40]} is not one this server speaks ({', '.join(map(str, INTEROP_VERSIONS))})",
            headers={INTEROP_HEADER: str(INTEROP_VERSION)},
        )
    return value


def upload_complete(request: web.Request) -> bool | None:
    """Upload-Complete, an sf-boolean; any other value is ignored, as the draft requires."""
    value = _item(_field(request, "Upload-Complete"))
    return value if type(value) is bool else None


def upload_offset(request: web.Request) -> int | None:
    return _count(_item(_field(request, "Upload-Offset")))


def upload_length(request: web.Request) -> int | None:
    return _count(_item(_field(request, "Upload-Length")))


def _count(value: object) -> int | None:
    """A non-negative sf-integer; anything else (booleans included) counts as absent."""
    return value if type(value) is int and value >= 0 else None


def _field(request: web.Request, name: str) -> str | None:
    """A field sent on several lines is one comma-joined value (RFC 9110 5.3)."""
    values = request.headers.getall(name, [])
    return ", ".join(values) if values else None


def _item(raw: str | None) -> object:
    """The bare value of an sf-item (its parameters are ignored), or None if absent or malformed."""
    if raw is None:
        return None
    try:
        parsed = http_sf.parse(raw.encode("latin-1"), tltype="item")
    except (http_sf.StructuredFieldError, UnicodeEncodeError):
        return None
    return parsed[0] if isinstance(parsed, tuple) else None


def boolean(value: bool) -> str:
    return http_sf.ser(value)


# limits


@dataclass(frozen=True)
class Limits:
    """The draft's Upload-Limit keys as this server enforces them (0 = no such limit)."""

    max_size: int
    min_size: int
    max_append_size: int
    min_append_size: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_upload_size,
            settings.min_upload_size,
            settings.max_append_size or settings.max_upload_size,
            settings.min_append_size,
        )

    def header(self, max_age: int | None) -> str:
        """The Upload-Limit dictionary; max-age is the upload's remaining lifetime, when it has one."""
        members: dict[str, int] = {"max-size": self.max_size, "max-append-size": self.max_append_size}
        if self.min_size:
            members["min-size"] = self.min_size
        if self.min_append_size:
            members["min-append-size"] = self.min_append_size
        if max_age is not None:
            members["max-age"] = max_age
        return http_sf.ser(members)  # type: ignore[arg-type]


def max_age(expires_at: datetime | None, now: datetime | None = None) -> int | None:
    """Seconds left until expires_at, never negative; None for an upload that does not expire."""
    if expires_at is None:
        return None
    left = (expires_at - (now or datetime.now(UTC))).total_seconds()
    return max(0, math.floor(left))


# digests (RFC 9530) and their problem types


@dataclass(frozen=True)
class Digest:
    algorithm: str
    value: bytes

    def new(self) -> hashlib._Hash:
        return DIGESTS[self.algorithm]()

    @property
    def digest(self) -> bytes:
        return self.value

    def mismatch(self) -> DigestMismatch:
        error = DigestMismatch(f"the content's {self.algorithm} does not match Content-Digest; it was discarded")
        error.extra.update({"algorithm": self.algorithm, "provided-digest": self.field})
        return error

    @property
    def field(self) -> str:
        """The digest as the problem body shows it: a serialized sf-binary."""
        return ":" + base64.b64encode(self.value).decode() + ":"


def content_digest(request: web.Request) -> Digest | None:
    """The strongest digest of the request content this server can check; None without Content-Digest."""
    digests = _digests(request, "Content-Digest", tuple(DIGESTS))
    return max(digests, key=lambda d: len(d.value)) if digests else None


def repr_digest(request: web.Request) -> str | None:
    """Repr-Digest's sha-256 of the whole representation, as hex for files.sha256 (the worker checks it
    on assembly and fails the file on a mismatch); None without the field."""
    digests = _digests(request, "Repr-Digest", REPR_DIGESTS)
    return digests[0].value.hex() if digests else None


def _digests(request: web.Request, name: str, supported: tuple[str, ...]) -> list[Digest]:
    """Every digest of `name` with an algorithm in `supported`. A field that does not parse is a
    malformed request, not silently no protection; one naming only algorithms we lack is refused with
    the algorithms we have (Want-*-Digest), so the client knows its bytes would go unchecked."""
    raw = _field(request, name)
    if raw is None:
        return []
    try:
        members = http_sf.parse(raw.encode("latin-1"), tltype="dictionary")
    except (http_sf.StructuredFieldError, UnicodeEncodeError):
        raise ValidationFailed(f"{name} is not a structured-field dictionary of digests", field=name) from None
    found = []
    for algorithm, member in members.items():  # type: ignore[union-attr]
        if algorithm not in supported:
            continue
        value = member[0] if isinstance(member, tuple) else None
        size = DIGESTS[algorithm]().digest_size
        if not isinstance(value, bytes) or len(value) != size:
            raise DigestInvalidValue(f"the {algorithm} digest in {name} must be a byte sequence of {size} bytes")
        found.append(Digest(algorithm, value))
    if not found:
        unsupported = next(iter(members), "")  # type: ignore[arg-type]
        want = "Want-" + name
        raise DigestUnsupportedAlgorithm(
            f"{name} names no algorithm this server checks; supported: {', '.join(supported)}",
            headers={want: ", ".join(f"{a}={10 - i}" for i, a in enumerate(supported))},
            **{"unsupported-algorithm": unsupported},
        )
    return found


def sha256_field(hex_digest: str) -> str:
    """Repr-Digest of a processed file, from the SHA-256 the worker recorded."""
    return http_sf.ser({"sha-256": bytes.fromhex(hex_digest)})


# representation metadata of the creation request


def hints(request: web.Request) -> FileHints:
    """Name from Content-Disposition (RFC 6266, filename* preferred), media type from Content-Type;
    both are hints only, cleaned as tus metadata is (the worker sniffs the real type)."""
    metadata: dict[str, bytes] = {}
    name = disposition_filename(request.headers.get("Content-Disposition"))
    if name:
        metadata["filename"] = name.encode("utf-8", "replace")
    if request.content_type not in (PARTIAL_UPLOAD, "application/octet-stream"):
        metadata["filetype"] = request.content_type.encode("ascii", "replace")
    return file_hints(metadata, "upload")


def disposition_filename(disposition: str | None) -> str | None:
    """The name of a Content-Disposition: its RFC 8187 `filename*` when it has one, else `filename`.
    The standard library's MIME parser reads both (RFC 2231 is the same encoding)."""
    if not disposition:
        return None
    parsed = Message()
    parsed["Content-Disposition"] = disposition
    names = [value for key, value in (parsed.get_params(header="content-disposition") or [])[1:] if key == "filename"]
    encoded = [value for value in names if isinstance(value, tuple)]
    if encoded:
        return collapse_rfc2231_value(encoded[-1])
    return next((value for value in names if isinstance(value, str)), None)


# 104 (Upload Resumption Supported)


def informational(headers: dict[str, str]) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 104 Upload Resumption Supported\r\n{lines}\r\n".encode("latin-1")


async def send_104(request: web.Request, version: int | None, headers: dict[str, str]) -> bool:
    """Writes an interim 104 before the final response, the way aiohttp itself writes `100 Continue`:
    raw onto the request's writer, which has not started the response yet. Only to HTTP/1.1 clients
    (RFC 9110 15.2: never 1xx to HTTP/1.0) that named an interop version we speak (the draft forbids
    it otherwise). Returns whether it was sent."""
    if version is None or request.version < HttpVersion11 or request.writer is None:
        return False
    transport = request.transport
    if transport is None or transport.is_closing():
        return False
    await request.writer.write(informational({**headers, INTEROP_HEADER: str(version)}))
    request.writer.output_size = 0  # the final response has not started: as aiohttp does after 100
    return True


PROGRESS_EVERY = 1.0  # seconds between progress 104s: enough for a progress bar, few enough to cost nothing


def progress_104s(request: web.Request, version: int | None) -> Progress | None:
    """While content arrives, a 104 with Upload-Offset at most once a second, so the client can free
    what the server has acknowledged. None where no 104 may be sent."""
    if version is None or request.version < HttpVersion11:
        return None
    last = time.monotonic()

    async def report(offset: int) -> None:
        nonlocal last
        if time.monotonic() - last < PROGRESS_EVERY:
            return
        last = time.monotonic()
        with contextlib.suppress(ConnectionError):  # a client gone mid-body: its bytes are still kept
            await send_104(request, version, {"Upload-Offset": str(offset)})

    return report
