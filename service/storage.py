"""Where blobs live under STORAGE_DIR. Names are generated here, never taken from the client."""
from __future__ import annotations

import glob
import uuid
from pathlib import Path
from typing import Iterable


def new_blob_name() -> str:
    return uuid.uuid4().hex


def blob_path(filename: str) -> str:
    """files.path for a blob: relative to STORAGE_DIR, fanned out by the name's first two characters."""
    return f"files/{filename[:2]}/{filename}"


def thumbnail_path(filename: str) -> str:
    """The thumbnail of a blob, relative to STORAGE_DIR (the worker chooses .webp or .jpg)."""
    return f"thumbs/{filename[:2]}/{filename}"


def resolve(storage_dir: Path, relative: str) -> Path:
    """An absolute path inside storage_dir; refuses anything that would leave it."""
    root = storage_dir.resolve()
    path = (root / relative).resolve()
    if root not in path.parents:
        raise ValueError(f"{relative!r} is outside the storage directory")
    return path


def blobs_of(storage_dir: Path, path: str, filename: str) -> list[Path]:
    """A file's blob (its `path`) and thumbnails (`thumbs/xx/<filename>.*`) that exist on disk."""
    try:
        blob, thumbs = resolve(storage_dir, path), resolve(storage_dir, thumbnail_path(filename))
    except ValueError:
        return []  # a row pointing outside STORAGE_DIR is not ours to delete
    return [p for p in [blob, *thumbs.parent.glob(glob.escape(thumbs.name) + ".*")] if p.is_file()]


def delete_blobs(storage_dir: Path, files: Iterable[tuple[str, str]]) -> int:
    """Removes each file's blob and thumbnails; missing ones are fine (never assembled, or already gone).
    Blocking IO: run it in a thread. Returns how many were removed."""
    removed = 0
    for path, filename in files:
        for candidate in blobs_of(storage_dir, path, filename):
            try:
                candidate.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed
