"""The one classification of MIME types into the kinds of files chunkd knows (files.type)."""

from __future__ import annotations

import re

from service.models import FileType

# type/subtype as RFC 6838 allows it, lower case (callers lower-case first); no parameters.
MIMETYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
UNKNOWN = "application/octet-stream"

DOCUMENT_TYPES = frozenset(
    {
        "application/pdf",
        "application/rtf",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/epub+zip",
        "application/json",
        "application/xml",
        "application/x-tex",
    }
)
DOCUMENT_PREFIXES = ("text/", "application/vnd.openxmlformats-officedocument.", "application/vnd.oasis.opendocument.")
KINDS = {"image": FileType.IMAGE, "video": FileType.VIDEO, "audio": FileType.AUDIO}


def classify(mimetype: str) -> FileType:
    """IMAGE/VIDEO/AUDIO by the major type, DOCUMENT for office formats, PDF and text, else OTHER."""
    kind = KINDS.get(mimetype.partition("/")[0])
    if kind is not None:
        return kind
    if mimetype in DOCUMENT_TYPES or mimetype.startswith(DOCUMENT_PREFIXES):
        return FileType.DOCUMENT
    return FileType.OTHER


def parse_mimetype(value: str) -> str | None:
    """A client's claimed type, normalised (`Image/PNG; q=1` -> `image/png`); None if it is not one."""
    mimetype = value.split(";")[0].strip().lower()
    return mimetype if MIMETYPE.fullmatch(mimetype) else None
