"""Domain values shared across modules."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


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
    return frozenset(SCOPE_ORDER[:top + 1])


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
class Upload:
    """A file seen as an upload session of the native protocol."""
    id: str
    status: str
    original_name: str
    mimetype: str
    size: int
    chunk_size: int
    bytes_received: int
    sha256: str | None
    expires_at: datetime | None
    expired: bool
    size_deferred: bool
    created_at: datetime

    @property
    def total_chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    def chunk_length(self, index: int) -> int:
        """Exact length of chunk `index`: the chunk size, or the remainder for the last chunk."""
        return min(self.chunk_size, self.size - index * self.chunk_size)


@dataclass(frozen=True)
class StoredFile:
    """A row of `files` as the files API and the worker see it."""
    id: str
    status: str
    type: str
    mimetype: str
    size: int
    original_name: str
    filename: str
    path: str
    url: str | None
    thumbnail: str | None
    metadata: dict | None
    error: str | None
    uploaded_by_id: str
    post_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ClaimedFile:
    """A file a worker holds the lease of."""
    id: str
    size: int
    sha256: str | None
    mimetype: str
    filename: str
    path: str
    attempts: int
