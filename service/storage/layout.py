"""Where blobs live: every key chunkd reads or writes is made here, from a name chunkd generated (files.filename),
never from anything a client sent. The same keys in every store: a local directory or a bucket under a prefix.

    files/ab/ab12...ef            the assembled file
    thumbs/ab/ab12...ef.webp      its thumbnail (.webp, or .jpg)
"""

from __future__ import annotations

import re
import uuid

FILES, THUMBS = "files", "thumbs"
AREAS = (FILES, THUMBS)
THUMBNAIL_SUFFIXES = {"image/webp": ".webp", "image/jpeg": ".jpg"}
# What new_blob_name makes (and anything like it a restore brings back): no slash, no dot, no way out of an area.
NAME = re.compile(r"[0-9A-Za-z_-]{1,128}")


def new_blob_name() -> str:
    return uuid.uuid4().hex


def _checked(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a blob name")
    return name


def blob_key(name: str) -> str:
    """The assembled file, fanned out by the name's first two characters (also stored as files.path)."""
    return f"{FILES}/{name[:2]}/{_checked(name)}"


def thumbnail_key(name: str, mimetype: str) -> str:
    return f"{THUMBS}/{name[:2]}/{_checked(name)}{THUMBNAIL_SUFFIXES[mimetype]}"


def keys_of(name: str) -> list[str]:
    """Every key a file may have: its blob and each possible thumbnail (deleting a missing key is harmless)."""
    return [blob_key(name), *(thumbnail_key(name, m) for m in THUMBNAIL_SUFFIXES)]


def owner_of(key: str) -> str | None:
    """The blob name a key belongs to (files/ab/<name>, thumbs/ab/<name>.webp); None outside the areas."""
    area, _, rest = key.partition("/")
    _, _, leaf = rest.rpartition("/")
    if area not in AREAS or not leaf:
        return None
    return leaf if area == FILES else leaf.partition(".")[0]
