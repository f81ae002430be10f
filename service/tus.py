"""tus 1.0.0 (https://tus.io/protocols/resumable-upload): the protocol's constants, its header
grammar, and the middleware that speaks the version. No SQL and no I/O here: handlers/tus.py uses it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from service.errors import (
    TusChecksumMismatch,
    TusInvalidChecksum,
    TusInvalidConcat,
    TusInvalidLength,
    TusInvalidMetadata,
    TusInvalidOffset,
    TusVersionUnsupported,
    ValidationFailed,
    problem_response,
)
from service.media.types import UNKNOWN, classify, parse_mimetype
from service.models import FileHints
from service.validation import check_id

TUS_VERSION = "1.0.0"
PREFIX = "/api/tus"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
)
OFFSET_STREAM = "application/offset+octet-stream"
CHECKSUMS: dict[str, Callable[[], hashlib._Hash]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}

# Metadata keys: non-empty, ASCII, without spaces and commas (the spec's grammar).
_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_DIGITS = re.compile(r"[0-9]{1,19}")


def is_tus_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


# The IETF Resumable Uploads draft shares this path (handlers/rufh.py, service/rufh.py): its requests
# name its interop version or say Upload-Complete, and never send Tus-Resumable.
RUFH_MARKERS = ("Upload-Draft-Interop-Version", "Upload-Complete")


def is_rufh(request: web.Request) -> bool:
    if "Tus-Resumable" in request.headers:
        return False
    return any(name in request.headers for name in RUFH_MARKERS)


def effective_method(request: web.Request) -> str:
    """Clients behind proxies that drop PATCH/DELETE send POST with X-HTTP-Method-Override. Only POST
    is overridden, as tusd does: a GET or HEAD that turned into a DELETE would be a request forgery."""
    if request.method != "POST":
        return request.method
    return request.headers.get("X-HTTP-Method-Override", request.method).strip().upper()


def _versioned(path: str) -> frozenset[str]:
    """The methods of this tus resource that carry Tus-Resumable: creation, or the upload's own."""
    return frozenset({"POST"}) if path in (PREFIX, PREFIX + "/") else frozenset({"HEAD", "PATCH", "DELETE"})


@web.middleware
async def tus_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses other protocol versions before anything is processed, and puts Tus-Resumable on every
    tus response but OPTIONS — error responses included, so it sits outside problem_middleware."""
    if not is_tus_path(request.path) or effective_method(request) == "OPTIONS" or is_rufh(request):
        return await handler(request)  # the IETF draft's requests share the path, not the version rule
    version = request.headers.get("Tus-Resumable")
    # A method the resource does not have is a 405 whatever the version (its dispatcher answers it).
    if version != TUS_VERSION and effective_method(request) in _versioned(request.path):
        response: web.StreamResponse = problem_response(
            TusVersionUnsupported(
                f"this server speaks tus {TUS_VERSION}; the request sent Tus-Resumable: {version or '(none)'}",
                headers={"Tus-Version": TUS_VERSION},
            )
        )
    else:
        response = await handler(request)
    response.headers["Tus-Resumable"] = TUS_VERSION
    return response


def parse_count(value: str | None, header: str, error: type[TusInvalidLength] | type[TusInvalidOffset]) -> int | None:
    """A non-negative decimal integer header, or None when it is absent."""
    if value is None:
        return None
    if not _DIGITS.fullmatch(value.strip()):
        raise error(f"{header} must be a non-negative integer, got {value!r}")
    return int(value)


def parse_metadata(raw: str) -> dict[str, bytes]:
    """`key base64value,key2 base64value2,key3`: keys unique, values base64 (and optional)."""
    pairs: dict[str, bytes] = {}
    for item in raw.split(","):
        key, _, value = item.strip().partition(" ")
        if not _KEY.fullmatch(key):
            raise TusInvalidMetadata(f"metadata key {key!r} is empty or not printable ASCII without spaces")
        if key in pairs:
            raise TusInvalidMetadata(f"metadata key {key!r} appears twice")
        try:
            pairs[key] = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise TusInvalidMetadata(f"the value of metadata key {key!r} is not base64") from None
    return pairs


def file_hints(metadata: dict[str, bytes], fallback_name: str) -> FileHints:
    try:
        name = metadata.get("filename", b"").decode()
    except UnicodeDecodeError:
        raise TusInvalidMetadata("metadata filename is not UTF-8") from None
    # The client's name is only shown and offered on download: drop any path and control characters.
    name = "".join(c for c in re.split(r"[/\\]", name)[-1] if c.isprintable()).strip()[:255]
    mimetype = parse_mimetype(metadata.get("filetype", b"").decode("ascii", "replace")) or UNKNOWN
    return FileHints(name or fallback_name, mimetype, classify(mimetype))


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def new(self) -> hashlib._Hash:
        return CHECKSUMS[self.algorithm]()

    def mismatch(self) -> TusChecksumMismatch:
        return TusChecksumMismatch(f"the body's {self.algorithm} does not match Upload-Checksum; it was discarded")


def parse_checksum(raw: str) -> Checksum:
    """`Upload-Checksum: <algorithm> <base64 digest>`; an algorithm we lack is a 400, as the spec says."""
    algorithm, _, encoded = raw.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise TusInvalidChecksum(f"unsupported checksum algorithm {algorithm!r}; supported: {','.join(CHECKSUMS)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise TusInvalidChecksum("the checksum is not base64") from None
    if len(digest) != CHECKSUMS[algorithm]().digest_size:
        raise TusInvalidChecksum(
            f"a {algorithm} digest has {CHECKSUMS[algorithm]().digest_size} bytes, this one {len(digest)}"
        )
    return Checksum(algorithm, digest)


@dataclass(frozen=True)
class Concat:
    kind: str  # "partial" or "final"
    part_ids: tuple[str, ...] = field(default=())  # a final upload's partials, in order


def parse_concat(raw: str, request: web.Request) -> Concat:
    """`partial`, or `final;<url> <url> ...` naming uploads of this server (absolute URLs or paths)."""
    raw = raw.strip()
    if raw == "partial":
        return Concat("partial")
    kind, sep, urls = raw.partition(";")
    if kind != "final" or not sep or not urls.split():
        raise TusInvalidConcat("Upload-Concat must be `partial` or `final;<upload URL> <upload URL> ...`")
    ids = tuple(_upload_id(url, request) for url in urls.split())
    if len(set(ids)) != len(ids):
        raise TusInvalidConcat("a partial upload can be concatenated only once")
    return Concat("final", ids)


def _upload_id(url: str, request: web.Request) -> str:
    try:
        parsed = URL(url)
    except ValueError:
        raise TusInvalidConcat(f"{url!r} is not a URL") from None
    ours = {(u.scheme, u.host, u.port) for u in (request.url.origin(), public_origin(request))}
    if parsed.is_absolute() and (parsed.scheme, parsed.host, parsed.port) not in ours:
        raise TusInvalidConcat(f"{url} is not an upload of this server")
    upload_id = parsed.path.removeprefix(PREFIX + "/")
    if not parsed.path.startswith(PREFIX + "/") or not upload_id or "/" in upload_id:
        raise TusInvalidConcat(f"{url} is not a tus upload URL ({PREFIX}/<id>)")
    try:
        check_id(upload_id, "Upload-Concat")
    except ValidationFailed:
        raise TusInvalidConcat(f"{url[:100]!r} does not name an upload") from None
    return upload_id


_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def public_origin(request: web.Request) -> URL:
    """The server as its client sees it. Behind a TLS-terminating proxy or load balancer (the
    "any number of servers" of docs/architecture.md) that is X-Forwarded-Proto/-Host; a client can mislead only itself with them."""
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    scheme = proto if proto in ("http", "https") else request.scheme
    try:
        return URL(f"{scheme}://{host if _HOST.fullmatch(host) else request.host}")
    except ValueError:
        return request.url.origin()


def upload_url(request: web.Request, upload_id: str) -> str:
    return str(public_origin(request).with_path(f"{PREFIX}/{upload_id}"))


def http_date(moment: datetime) -> str:
    """RFC 9110 IMF-fixdate, the form Upload-Expires takes."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)
