"""What analysing a file yields, in the child that decodes it and in the worker that records it."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from service.media.thumbnail import Thumbnail
from service.models import FileType

MAX_PIXELS = 100_000_000  # a decompression-bomb guard, checked on the declared size before decoding


class Unreadable(Exception):
    """The bytes are not what they are typed as, or no decoder can read them: the file fails, and
    no retry would help. The message is the file's error as its owner sees it."""


@dataclass
class Found:
    """An analyser's answer: metadata keys of its kind, and the picture the thumbnail is made of."""

    metadata: dict[str, Any]
    picture: Image.Image | None = None
    kind: FileType | None = None  # when the bytes say better than the MIME type (a WebM holding only audio)


@dataclass(frozen=True)
class Analysis:
    mimetype: str
    type: FileType
    metadata: dict[str, Any] = field(default_factory=dict)
    thumbnail: Thumbnail | None = None

    @property
    def thumbnail_mimetype(self) -> str | None:
        return self.thumbnail.mimetype if self.thumbnail else None


def check_pixels(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise Unreadable(f"{what} declares no valid dimensions ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise Unreadable(f"{what} of {width}x{height} pixels exceeds the {MAX_PIXELS} pixel limit")


# An OSError with one of these is the system failing to read the file (a bad disk, a vanished temporary
# file), not the bytes being wrong: it is the environment's fault and the worker retries.
ENVIRONMENT_ERRNOS = frozenset(
    {errno.EIO, errno.ENOENT, errno.ESTALE, errno.EACCES, errno.EPERM, errno.ENXIO, errno.ENODEV, errno.EBADF}
)


def decode_failed(what: str, path: Path, e: BaseException) -> BaseException:
    """What to raise for a decoder's error: the OSError itself when it is the environment's fault,
    MemoryError as is (the pool names the limit), else Unreadable with the decoder's own words."""
    if (isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS) or isinstance(e, MemoryError):
        return e
    words = (getattr(e, "strerror", None) or str(e) or type(e).__name__).strip()
    if path.is_absolute():  # where the worker keeps the bytes is nobody's business
        words = words.replace(str(path), "the file")
    return Unreadable(f"unreadable {what}: {words}")
