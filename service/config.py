"""Settings: every environment variable chunkd reads, declared once with its default and help."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

KiB, MiB, GiB = 1024, 1024**2, 1024**3


class ConfigError(Exception):
    """A setting has a value chunkd cannot use; the message is one line naming it."""


def _int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = "" if maximum is None else f" and at most {maximum}"
            raise ValueError(f"must be at least {minimum}{upper}, got {value}")
        return value

    return parse


_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
    "t": 1024 * GiB,
    "tb": 1024 * GiB,
    "tib": 1024 * GiB,
}


# Sizes and durations are read by one rule: a plain decimal number (digits, an optional fraction; no sign,
# no exponent) and then a unit. A size's unit may be left out (bytes); a duration's may not: `24` could be
# seconds, hours or milliseconds, so it is refused rather than guessed.
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)")


def _quantity(raw: str, units: Mapping[str, int], example: str) -> int:
    match = _QUANTITY.fullmatch(raw.strip().lower())
    if not match or match[2] not in units:
        raise ValueError(f"expected {example}, got {raw!r}")
    return int(float(match[1]) * units[match[2]])


def _bytes(minimum: int) -> Callable[[str], int]:
    """Byte counts accept binary units: `8MiB`, `512k`, `1.5G` (all powers of 1024)."""

    def parse(raw: str) -> int:
        value = _quantity(raw, _UNITS, "a size such as 8388608, 8MiB or 1.5G")
        if value < minimum:
            raise ValueError(f"must be at least {minimum} bytes, got {value}")
        return value

    return parse


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(raw: str) -> int:
    """Whole seconds from a number with a unit: `900s`, `15m`, `1.5h`, `30d`."""
    example = "a positive duration with a unit, such as 900s, 15m, 1.5h or 30d"
    value = _quantity(raw, _SECONDS, example)
    if value <= 0:
        raise ValueError(f"expected {example}, got {raw!r}")
    return value


def _text(raw: str) -> str:
    return raw.strip()


def _url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("postgres://", "postgresql://")):
        raise ValueError("must be a postgresql:// URL")
    return value


def _host(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _secret(raw: str) -> str:
    value = raw.strip()
    if value and len(value) < 32:
        raise ValueError(f"must be at least 32 characters (HS256 key), got {len(value)}")
    return value


# S3's bucket naming rules (the subset every S3 server accepts): 3-63 of a-z 0-9 . -, alphanumeric at both ends.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_storage_url(raw: str) -> str:
    """Unset: STORAGE_DIR. file:///path: a local directory. s3://bucket/prefix: a bucket (prefix optional)."""
    value = raw.strip()
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return value
    if parts.scheme == "s3":
        if not _BUCKET.fullmatch(parts.netloc):
            raise ValueError(f"{parts.netloc!r} is not a valid bucket name (3-63 characters: a-z, 0-9, '.', '-')")
        if parts.query or parts.fragment or "//" in parts.path or ".." in parts.path.split("/"):
            raise ValueError(f"expected s3://bucket/prefix, got {value!r}")
        return value
    raise ValueError(f"expected file:///path or s3://bucket/prefix, got {value!r}")


def _endpoint(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc):
        raise ValueError(f"expected an http:// or https:// URL, got {raw!r}")
    return value


def _quota(raw: str) -> int | None:
    """A byte count, or empty / `unlimited` for none."""
    if raw.strip().lower() in ("", "unlimited", "none"):
        return None
    return _bytes(0)(raw)


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"expected true or false, got {raw!r}")
    return value in ("true", "1", "yes")


def _origins(raw: str) -> tuple[str, ...]:
    """Each exactly as a browser sends Origin (scheme://host[:port], no path, no trailing slash), or `*`:
    any other spelling would start fine and never match."""
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{origin!r} is not an origin: write it as scheme://host[:port], e.g. https://app.example")
        if origin != f"{parts.scheme}://{parts.netloc}" or parts.netloc != parts.netloc.lower():
            raise ValueError(
                f"{origin!r} never matches a browser's Origin: write it as "
                f"{parts.scheme}://{parts.netloc.lower()} (no path, no trailing slash, lower case)"
            )
    return origins


@dataclass(frozen=True)
class Setting:
    env: str
    field: str
    default: str
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL", "database_url", "", _url, "PostgreSQL URL; empty starts the embedded PostgreSQL under ./var/"
    ),
    Setting("DATABASE_POOL_SIZE", "db_pool_size", "10", _int(1, 1000), "most connections the pool opens per process"),
    Setting(
        "DATABASE_POOL_TIMEOUT",
        "db_pool_timeout_ms",
        "20000",
        _int(1),
        "ms to wait for a free pooled connection before answering 503",
    ),
    Setting(
        "DATABASE_POOL_IDLE_TIMEOUT",
        "db_pool_idle_timeout_ms",
        "10000",
        _int(0),
        "ms an idle pooled connection lives before it is closed (0 keeps them)",
    ),
    Setting(
        "STORAGE_DIR",
        "storage_dir",
        "./storage",
        _host,
        "directory of the assembled files and thumbnails; with an s3:// STORAGE_URL, only the worker's "
        "working copies (under .work/)",
    ),
    Setting(
        "STORAGE_URL",
        "storage_url",
        "",
        parse_storage_url,
        "where blobs live: unset (STORAGE_DIR), file:///path, or s3://bucket/prefix (needs chunkd[s3])",
    ),
    Setting(
        "AWS_ACCESS_KEY_ID",
        "aws_access_key_id",
        "",
        _text,
        "S3 access key; unset uses the AWS default chain (~/.aws, instance role)",
    ),
    Setting("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", "", _text, "S3 secret key"),
    Setting("AWS_REGION", "aws_region", "us-east-1", _host, "S3 region"),
    Setting(
        "S3_ENDPOINT_URL",
        "s3_endpoint_url",
        "",
        _endpoint,
        "S3 server of a non-AWS store (Ceph RGW, MinIO...); path-style addressing is used with it",
    ),
    Setting(
        "DOWNLOAD_REDIRECT",
        "download_redirect",
        "false",
        _bool,
        "true: content and thumbnail downloads answer 302 to a short-lived presigned URL of the store (S3 only)",
    ),
    Setting(
        "JWT_SECRET",
        "jwt_secret",
        "",
        _secret,
        "HMAC key of access tokens; generated under ./var/ for the embedded database",
    ),
    Setting("ACCESS_TOKEN_TTL", "access_token_ttl", "15m", _duration, "lifetime of an access token"),
    Setting("REFRESH_TOKEN_TTL", "refresh_token_ttl", "30d", _duration, "lifetime of a refresh token"),
    Setting(
        "MAX_UPLOAD_SIZE",
        "max_upload_size",
        "10GiB",
        _bytes(1),
        "largest file accepted, in bytes (units: KiB, MiB, GiB)",
    ),
    Setting(
        "MIN_UPLOAD_SIZE",
        "min_upload_size",
        "0",
        _bytes(0),
        "smallest file a resumable upload (IETF draft) may declare, in bytes; 0 for none (Upload-Limit min-size)",
    ),
    Setting(
        "MAX_APPEND_SIZE",
        "max_append_size",
        "0",
        _bytes(0),
        "largest body of one append (tus or IETF draft PATCH, creation with content); 0: MAX_UPLOAD_SIZE",
    ),
    Setting(
        "MIN_APPEND_SIZE",
        "min_append_size",
        "0",
        _bytes(0),
        "smallest body of an append that does not complete its upload (Slowloris guard); 0 for none",
    ),
    Setting(
        "DEFAULT_CHUNK_SIZE",
        "default_chunk_size",
        "8MiB",
        _bytes(1),
        "chunk size of an upload that does not ask for one",
    ),
    Setting("MAX_CHUNK_SIZE", "max_chunk_size", "64MiB", _bytes(1), "largest chunk accepted"),
    Setting(
        "CHUNK_MEMORY",
        "chunk_memory",
        "512MiB",
        _bytes(1),
        "memory for the chunk bodies one process holds at once (each counts twice: the body, and the "
        "database driver's copy while it is stored), taken as bytes arrive; a body beyond it waits, then gets 503",
    ),
    Setting(
        "USER_INFLIGHT_BYTES",
        "user_inflight_bytes",
        "128MiB",
        _bytes(1),
        "the share of CHUNK_MEMORY (counted the same way) one user's upload bodies may hold; beyond it: 429",
    ),
    Setting(
        "USER_INFLIGHT_REQUESTS",
        "user_inflight_requests",
        "32",
        _int(1),
        "upload requests (chunk PUTs, tus PATCHes) one user may have in flight at once; beyond it: 429",
    ),
    Setting(
        "BODY_MIN_RATE",
        "body_min_rate",
        "4KiB",
        _bytes(0),
        "slowest average rate, in bytes per second, an upload body may arrive at (0: no minimum); slower: 408",
    ),
    Setting(
        "BODY_RATE_WINDOW",
        "body_rate_window",
        "30s",
        _duration,
        "the time BODY_MIN_RATE is averaged over: a body silent this long ends",
    ),
    Setting("UPLOAD_EXPIRY", "upload_expiry", "24h", _duration, "time an unfinished upload is kept"),
    Setting("WORKER_CONCURRENCY", "worker_concurrency", "2", _int(1, 256), "files one worker processes at a time"),
    Setting(
        "STREAMING_MIN_SIZE",
        "streaming_min_size",
        "32MiB",
        _bytes(0),
        "uploads at least this large are assembled while they arrive (0: only once complete), so that "
        "they are COMPLETED soon after their last byte",
    ),
    Setting(
        "WORKER_LEASE",
        "worker_lease",
        "30s",
        _duration,
        "a worker silent this long is presumed dead and its files are taken again (heartbeat: a third of it)",
    ),
    Setting(
        "BLOCKED_BACKOFF_MIN",
        "blocked_backoff_min",
        "1s",
        _duration,
        "first wait before a file held back by its environment (full, read-only or failing disk, missing "
        "STORAGE_DIR, unreachable store) is tried again; doubled at every step",
    ),
    Setting(
        "BLOCKED_BACKOFF_MAX",
        "blocked_backoff_max",
        "5m",
        _duration,
        "longest wait between two tries of a file held back by its environment (retried for as long as it lasts)",
    ),
    Setting(
        "PROCESSING_TIMEOUT",
        "processing_timeout",
        "120s",
        _duration,
        "time a decoder may spend on one file (metadata and thumbnail); then it is killed, the file tried "
        "once more, then FAILED",
    ),
    Setting(
        "PROCESSING_MEMORY",
        "processing_memory",
        "1GiB",
        _bytes(256 * MiB),
        "address space of one decoder process (RLIMIT_AS, its ~200 MiB of libraries included); a file "
        "needing more is FAILED",
    ),
    Setting("SLOW_REQUEST_MS", "slow_request_ms", "1000", _int(1), "requests slower than this are logged as warnings"),
    Setting("HOST", "host", "127.0.0.1", _host, "address the HTTP server binds"),
    Setting("PORT", "port", "8080", _int(0, 65535), "port the HTTP server binds"),
    Setting(
        "CORS_ORIGINS",
        "cors_origins",
        "",
        _origins,
        "comma-separated origins allowed to call the API from a browser (* for any)",
    ),
    Setting("CLEANUP_INTERVAL", "cleanup_interval", "1h", _duration, "how often the worker runs the cleanup pass"),
    # accounts (issue 13)
    Setting(
        "LINK_TTL",
        "link_ttl",
        "1h",
        _duration,
        "lifetime of signed links to a file's content, thumbnail and events (handed out with 1/2 to all of it left)",
    ),
    Setting(
        "ARGON2_CONCURRENCY",
        "argon2_concurrency",
        "2",
        _int(1, 64),
        "password hashes computed at once; more logins wait, so a login flood cannot starve uploads",
    ),
    Setting(
        "LOGIN_MAX_FAILURES",
        "login_max_failures",
        "10",
        _int(1),
        "failed logins per account, and per client address, within LOGIN_WINDOW before 429",
    ),
    Setting("LOGIN_WINDOW", "login_window", "15m", _duration, "the sliding window failed logins are counted over"),
    Setting(
        "USER_QUOTA",
        "user_quota",
        "unlimited",
        _quota,
        "bytes one user may store (stored files plus declared sizes of unfinished uploads), unless an "
        "admin sets the user's quota_bytes; `unlimited` for no limit",
    ),
    Setting(
        "WEBHOOK_ALLOW_PRIVATE",
        "webhook_allow_private",
        "false",
        _bool,
        "allow webhook targets on loopback, private and link-local addresses (tests, private networks)",
    ),
    Setting(
        "WEBHOOK_TIMEOUT",
        "webhook_timeout",
        "10s",
        _duration,
        "how long a webhook receiver gets to answer one delivery",
    ),
    Setting("LOG_LEVEL", "log_level", "INFO", _text, "DEBUG, INFO, WARNING or ERROR"),
)


@dataclass(frozen=True)
class Settings:
    database_url: str
    db_pool_size: int
    db_pool_timeout_ms: int
    db_pool_idle_timeout_ms: int
    storage_dir: str
    storage_url: str
    aws_access_key_id: str
    aws_secret_access_key: str = dataclasses.field(repr=False)
    aws_region: str
    s3_endpoint_url: str
    download_redirect: bool
    jwt_secret: str
    access_token_ttl: int
    refresh_token_ttl: int
    max_upload_size: int
    min_upload_size: int
    max_append_size: int
    min_append_size: int
    default_chunk_size: int
    max_chunk_size: int
    chunk_memory: int
    user_inflight_bytes: int
    user_inflight_requests: int
    body_min_rate: int
    body_rate_window: int
    upload_expiry: int
    worker_concurrency: int
    streaming_min_size: int
    worker_lease: int
    blocked_backoff_min: int
    blocked_backoff_max: int
    processing_timeout: int
    processing_memory: int
    slow_request_ms: int
    host: str
    port: int
    cors_origins: tuple[str, ...]
    cleanup_interval: int
    link_ttl: int
    argon2_concurrency: int
    login_max_failures: int
    login_window: int
    user_quota: int | None
    webhook_allow_private: bool
    webhook_timeout: int
    log_level: str

    @property
    def storage_path(self) -> Path:
        """The local directory: the store itself, unless STORAGE_URL names a bucket."""
        parts = urlsplit(self.storage_url)
        return Path(unquote(parts.path)) if parts.scheme == "file" else Path(self.storage_dir)

    @property
    def work_path(self) -> Path:
        """Where the worker keeps local copies of files being processed (hidden inside the local directory)."""
        return self.storage_path / ".work"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments ignored, one level of quotes removed."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")) -> Settings:
    """The process environment wins over `.env`; every value is checked here, once."""
    source = dict(read_dotenv(dotenv)) if dotenv else {}
    source.update(os.environ if environ is None else environ)
    values = {}
    for s in SETTINGS:
        raw = source.get(s.env, s.default)
        try:
            values[s.field] = s.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{s.env}: {e}") from None
    settings = Settings(**values)
    if settings.default_chunk_size > settings.max_chunk_size:
        raise ConfigError(
            f"DEFAULT_CHUNK_SIZE: {settings.default_chunk_size} is larger than "
            f"MAX_CHUNK_SIZE ({settings.max_chunk_size})"
        )
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {settings.log_level!r}")
    return settings
