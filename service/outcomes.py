"""What processing one file can come to. The worker turns every attempt into exactly one Outcome and records
it in one place (Worker._record): Finished, Failed (the bytes themselves are wrong: no retry helps) or
RetryAfter (back to the queue for a while). An environment fault (blocked_reason: a full, read-only or failing
disk, a missing STORAGE_DIR, an unreachable store) is never the file's: it is retried, uncounted, with a
backoff of its own, for as long as it lasts."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from service.config import Settings
from service.media.result import Analysis
from service.storage import StorageMissing, StorageUnavailable


class CorruptContent(Exception):
    """The bytes themselves are wrong (a checksum mismatch, a gap in the chunks, an unreadable image):
    FAILED at once, no retry helps."""


@dataclass(frozen=True)
class Finished:
    """Assembled, checked, analysed and stored: COMPLETED with this digest and analysis."""

    digest: str
    analysis: Analysis


@dataclass(frozen=True)
class Failed:
    """FAILED with this reason; the chunks are dropped."""

    reason: str


@dataclass(frozen=True)
class RetryAfter:
    """Back to the queue, taken again no sooner than `delay` seconds. counted: the attempt counts towards
    the attempts limit (False when the fault was not the file's: the database went away, say)."""

    delay: float
    reason: str
    counted: bool = True
    blocked: str | None = None  # the environment holds it back: this label (blocked_reason), uncounted


Outcome = Finished | Failed | RetryAfter


# OS errors that are the environment's fault, never the file's, as the label of chunkd_processing_blocked.
BLOCKED_ERRNOS = {
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
    errno.EROFS: "read_only",
    errno.EIO: "io_error",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
}


BLOCKED_REASONS = (*sorted(set(BLOCKED_ERRNOS.values())), "storage_missing", "storage_unavailable")


def blocked_reason(error: BaseException) -> str | None:
    """Why the environment holds processing back (a label), or None when the error says nothing of the kind:
    an OS error above (raised as is, as by a local copy, or under a StorageUnavailable), a missing STORAGE_DIR,
    or any other unavailable store (an unreachable bucket, a disk failing in another way)."""
    if isinstance(error, StorageMissing):
        return "storage_missing"
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in BLOCKED_ERRNOS:
            return BLOCKED_ERRNOS[seen.errno]
        seen = seen.__cause__
    return "storage_unavailable" if isinstance(error, StorageUnavailable) else None


def blocked_delay(settings: Settings, steps: int) -> int:
    """Seconds before the next try of something its environment holds back, after `steps` tries:
    BLOCKED_BACKOFF_MIN doubled at every step, up to BLOCKED_BACKOFF_MAX."""
    return min(settings.blocked_backoff_min * 2 ** min(steps, 32), settings.blocked_backoff_max)
