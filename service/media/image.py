"""Images: Pillow, with pillow-heif for HEIC/HEIF (AVIF is Pillow's own since 11.2). Dimensions as
displayed, animation, camera and capture time; the thumbnail is of the first frame."""

from __future__ import annotations

import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from service.media.result import Found, Unreadable, check_pixels, decode_failed
from service.media.thumbnail import THUMBNAIL_SIDE

pillow_heif.register_heif_opener()
# Pillow's own guard warns (and errors at twice the limit) from inside open(); check_pixels gives a
# clear reason instead, for every size, without process-global warning filters.
Image.MAX_IMAGE_PIXELS = None

# libmagic names these; Pillow must be able to read them, or the file is corrupt. Other images
# (SVG, JPEG XL, ...) complete without a thumbnail.
READABLE = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/apng",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/x-ms-bmp",
        "image/tiff",
        "image/heic",
        "image/heif",
        "image/heic-sequence",
        "image/heif-sequence",
        "image/avif",
    }
)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)

ORIENTATION, MAKE, MODEL, DATETIME, EXIF_IFD = 0x0112, 0x010F, 0x0110, 0x0132, 0x8769
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height when applied
MAX_TEXT = 200  # characters kept of a camera's make or model


def analyse(path: Path, mimetype: str) -> Found:
    """thumbnail() runs before exif_transpose so that JPEGs decode in draft mode (DCT scaling): 71 ms
    and 26 MiB for 24 MP instead of 306 ms and 203 MiB."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            check_pixels(width, height, "image")
            metadata: dict[str, Any] = {"format": im.format}
            frames = getattr(im, "n_frames", 1)
            metadata.update(animated=bool(getattr(im, "is_animated", False)), frames=frames)
            if frames > 1:
                im.seek(0)
            exif = im.getexif()
            metadata.update(camera_and_time(exif))
            orientation = exif.get(ORIENTATION, 1)
            im.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            picture = ImageOps.exif_transpose(im)
    except UnidentifiedImageError:
        if mimetype in READABLE:
            raise Unreadable(f"unreadable image: not a valid {mimetype}") from None
        return Found({})
    except DECODE_ERRORS as e:  # Pillow's words for truncated or malformed data
        raise decode_failed("image", path, e) from None
    if orientation in ROTATED:
        width, height = height, width
    metadata.update(width=width, height=height)
    if orientation != 1:
        metadata["orientation"] = orientation
    return Found(metadata, picture)


def camera_and_time(exif: Image.Exif) -> dict[str, Any]:
    """`camera` {make, model} and `taken_at` (ISO 8601, with the offset when the camera wrote one).
    Nothing else of the EXIF is kept: it may hold GPS positions, serial numbers, owner names."""
    found: dict[str, Any] = {}
    camera = {key: text for key, tag in (("make", MAKE), ("model", MODEL)) if (text := exif_text(exif.get(tag)))}
    if camera:
        found["camera"] = camera
    details = exif.get_ifd(EXIF_IFD)
    taken = exif_time(details.get(DATETIME_ORIGINAL), details.get(OFFSET_TIME_ORIGINAL)) or exif_time(
        exif.get(DATETIME)
    )
    if taken:
        found["taken_at"] = taken
    return found


def exif_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value if c.isprintable()).strip()
    return text[:MAX_TEXT] or None


def exif_time(value: object, offset: object = None) -> str | None:
    """EXIF's `YYYY:MM:DD HH:MM:SS` (local time of the camera) as ISO 8601; None if it is not a time."""
    text = exif_text(value)
    if not text:
        return None
    try:
        taken = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    zone = exif_text(offset)
    if zone:
        try:
            return datetime.fromisoformat(taken.isoformat() + zone).isoformat()
        except ValueError:
            pass
    return taken.isoformat()
