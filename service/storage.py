"""Where blobs live under STORAGE_DIR. Names are generated here, never taken from the client."""
from __future__ import annotations

import glob
import uuid
from collections.abc import Iterable
from pathlib import Path


def new_blob_name() -> str:
    return uuid.uuid4().hex


def blob_path(filename: str) -> str:
    """files.path for a blob: relative to STORAGE_DIR, fanned out by the name's first two characters."""
    return f"files/{filename[:2]}/{filename}"


def thumbnail_path(filename: str) -> str:
    """The thumbnail of a blob, relative to STORAGE_DIR (the worker chooses .webp or .jpg)."""
    return f"thumbs/{filename[:2]}/{filename}"


THUMBNAIL_SUFFIXES = (".webp", ".jpg")


def remove_blobs(storage_dir: Path, path: str, filename: str) -> None:
    """A file's blob and its thumbnail, whichever exist."""
    resolve(storage_dir, path).unlink(missing_ok=True)
    base = resolve(storage_dir, thumbnail_path(filename))
    for suffix in THUMBNAIL_SUFFIXES:
        base.with_name(base.name + suffix).unlink(missing_ok=True)


def resolve(storage_dir: Path, relative: str) -> Path:
    """An absolute path inside storage_dir; refuses anything that would leave it."""
    root = storage_dir.resolve()
    path = (root / relative).resolve()
    if root not in path.parents:
        raise ValueError(f"{relative!r} is outside the storage directory")
    return path


def delete_blobs(storage_dir: Path, files: Iterable[tuple[str, str]]) -> int:
    """Removes each file's blob (its `path`) and thumbnails (`thumbs/xx/<filename>.*`); missing ones are
    fine (never assembled, or already gone). Blocking IO: run it in a thread. Returns how many were removed."""
    removed = 0
    for path, filename in files:
        try:
            blob, thumbs = resolve(storage_dir, path), resolve(storage_dir, thumbnail_path(filename))
        except ValueError:
            continue  # a row pointing outside STORAGE_DIR is not ours to delete
        candidates = [blob, *thumbs.parent.glob(glob.escape(thumbs.name) + ".*")]
        for candidate in candidates:
            try:
                candidate.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed
