"""Domain values shared across modules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.config import Settings


class Role(StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"


class FileType(StrEnum):
    IMAGE = "IMAGE"
    DOCUMENT = "DOCUMENT"
    VIDEO = "VIDEO"
    AUDIO = "AUDIO"
    OTHER = "OTHER"


class FileStatus(StrEnum):
    UPLOADING = "UPLOADING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class Scope(StrEnum):
    """What a token may do; each level includes the ones before it (upload reads, admin does all)."""

    READ = "read"
    UPLOAD = "upload"
    ADMIN = "admin"


SCOPE_ORDER = (Scope.READ, Scope.UPLOAD, Scope.ADMIN)


def expand_scopes(scopes: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """The scopes a list grants: the highest named level and every level below it."""
    top = max((SCOPE_ORDER.index(Scope(s)) for s in scopes), default=-1)
    return frozenset(SCOPE_ORDER[: top + 1])


@dataclass(frozen=True)
class CurrentUser:
    """The authenticated caller of a request: by a session (session_id), an API token (token_id) or a
    signed link (neither; read only)."""

    id: str
    email: str
    role: str
    scopes: frozenset[str] = frozenset()
    session_id: str | None = None
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


# uploads and files
TERMINAL_STATUSES = frozenset({FileStatus.COMPLETED, FileStatus.FAILED})


@dataclass(frozen=True)
class File:
    """A row of `files`: an upload of either protocol while UPLOADING, then the worker's job, then a
    stored file. Every store function that reads or returns files rows returns this (store.files.FILE_COLUMNS
    selects exactly these fields; `expired` is computed by the database's clock)."""

    id: str
    original_name: str
    filename: str
    mimetype: str
    size: int
    type: str
    status: str
    path: str
    metadata: dict[str, Any] | None
    uploaded_by_id: str
    post_id: str | None
    created_at: datetime
    updated_at: datetime
    size_deferred: bool
    chunk_size: int
    bytes_received: int
    sha256: str | None
    expires_at: datetime | None
    error: str | None
    attempts: int
    worker_id: str | None
    claimed_at: datetime | None
    run_after: datetime
    protocol: str
    blocked_reason: str | None  # why its environment holds processing back (service.outcomes.blocked_reason)
    blocked_retries: int  # backoff steps taken while blocked
    tus_metadata: str | None  # Upload-Metadata exactly as sent
    tus_concat: str | None  # "partial" or "final"
    tus_parts: list[str] | None
    expired: bool  # UPLOADING past expires_at

    @property
    def offset(self) -> int:
        """tus's name for the bytes received so far."""
        return self.bytes_received

    @property
    def length_known(self) -> bool:
        return not self.size_deferred

    @property
    def complete(self) -> bool:
        return self.length_known and self.bytes_received == self.size

    @property
    def closed(self) -> bool:
        """An appended upload that takes no more bytes: completed (tus: its length reached; the IETF
        draft: Upload-Complete), and processed or being processed."""
        return self.status != FileStatus.UPLOADING

    @property
    def total_chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    def chunk_length(self, index: int) -> int:
        """Exact length of native chunk `index`: the chunk size, or the remainder for the last chunk."""
        return min(self.chunk_size, self.size - index * self.chunk_size)


@dataclass(frozen=True)
class FileHints:
    """What the client says about the file (tus metadata, the draft's Content-Disposition, the native
    body); the worker detects the real type from the bytes."""

    original_name: str
    mimetype: str
    type: FileType


@dataclass(frozen=True)
class NewUpload:
    """What a client asks for when it starts an upload, in either protocol: the one input of
    store.files.insert_upload, which names the blob and sets the expiry."""

    uploaded_by_id: str
    original_name: str
    mimetype: str
    type: str
    size: int
    chunk_size: int
    expires_in: int  # seconds
    protocol: str = "native"
    size_deferred: bool = False
    sha256: str | None = None
    post_id: str | None = None
    tus_metadata: str | None = None
    tus_concat: str | None = None
    tus_parts: list[str] | None = None

    @classmethod
    def start(
        cls,
        user_id: str,
        hints: FileHints,
        size: int | None,
        settings: Settings,
        protocol: str,
        *,
        chunk_size: int | None = None,
        sha256: str | None = None,
        post_id: str | None = None,
        tus_metadata: str | None = None,
        tus_concat: str | None = None,
        tus_parts: list[str] | None = None,
    ) -> NewUpload:
        """An upload as every protocol starts one: the client's hints and size (None: not known yet, a
        deferred length), the settings' chunk size (unless the client chose one) and expiry."""
        return cls(
            uploaded_by_id=user_id,
            original_name=hints.original_name,
            mimetype=hints.mimetype,
            type=hints.type,
            size=size or 0,
            size_deferred=size is None,
            chunk_size=chunk_size or settings.default_chunk_size,
            expires_in=settings.upload_expiry,
            protocol=protocol,
            sha256=sha256,
            post_id=post_id,
            tus_metadata=tus_metadata,
            tus_concat=tus_concat,
            tus_parts=tus_parts,
        )


@dataclass(frozen=True)
class User:
    """A row of `users`: never the password hash (users.refresh_token is unused since sql/0013)."""

    id: str
    email: str
    name: str | None
    role: str
    is_active: bool
    created_at: datetime
    updated_at: datetime
    quota_bytes: int | None = None  # None: USER_QUOTA applies


@dataclass(frozen=True)
class Post:
    """A row of `posts`; the listings add the author, the COMPLETED files and the count of all files."""

    id: str
    title: str
    content: str | None
    published: bool
    author_id: str
    created_at: datetime
    updated_at: datetime
    author: dict[str, Any] | None = None
    files: list[dict[str, Any]] | None = None
    file_count: int | None = None


# accounts (issue 13): one row type per table
@dataclass(frozen=True)
class Session:
    """A row of `sessions` (one login, one device); never its refresh token's hash."""

    id: str
    user_id: str
    device: str
    ip: str | None
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_why: str | None


@dataclass(frozen=True)
class ApiToken:
    """A row of `api_tokens`; never its hash."""

    id: str
    user_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Webhook:
    """A row of `webhooks`; `secret` is read only by the deliverer (and shown once, at creation)."""

    id: str
    user_id: str
    url: str
    events: list[str]
    all_users: bool
    description: str | None
    secret: str
    created_at: datetime
    failing_since: datetime | None
    disabled_at: datetime | None


@dataclass(frozen=True)
class WebhookDelivery:
    """A row of `webhook_deliveries`: one event for one webhook (the outbox)."""

    id: str
    webhook_id: str
    event_type: str
    payload: dict[str, Any]
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    locked_until: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
