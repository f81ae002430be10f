"""The MIME type of a file, from its bytes (libmagic); the client's claim is never consulted."""

from __future__ import annotations

from pathlib import Path

import magic

from service.media.types import UNKNOWN

MAGIC_HEAD = 16 * 1024  # libmagic decides on the head; the whole file costs time and memory
ID3_HEADER = 10
MAX_ID3_TAGS = 4  # tags may follow one another (appended by different taggers); more is not audio


def detect_mimetype(path: Path) -> str:
    """libmagic on the head of the file. An ID3v2 tag (MP3, sometimes FLAC or AAC) may hold megabytes of
    cover art, which libmagic cannot look past within the head: the audio behind the tag is sniffed."""
    with open(path, "rb") as f:
        head = f.read(MAGIC_HEAD)
        mimetype = magic.from_buffer(head, mime=True) or UNKNOWN
        offset = 0
        for _ in range(MAX_ID3_TAGS):
            size = id3_size(head)
            if size is None:
                break
            offset += size
            f.seek(offset)
            head = f.read(MAGIC_HEAD)
            behind = magic.from_buffer(head, mime=True) or UNKNOWN
            if behind.startswith("audio/"):
                return behind
    return mimetype


def id3_size(head: bytes) -> int | None:
    """Length of the ID3v2 tag at the start of head (header, body, footer), or None if there is none.
    The body's size is four 7-bit bytes ("syncsafe"), so that no byte of it looks like an MPEG sync."""
    if len(head) < ID3_HEADER or not head.startswith(b"ID3") or any(b & 0x80 for b in head[6:10]):
        return None
    body = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    footer = ID3_HEADER if head[5] & 0x10 else 0
    return ID3_HEADER + body + footer
