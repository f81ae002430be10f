"""Thumbnails: one format, one size rule, and nothing of the source's metadata carried over."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

THUMBNAIL_SIDE = 320
MIMETYPE = "image/webp"
SUFFIXES = {"image/webp": ".webp", "image/jpeg": ".jpg"}  # .jpg: thumbnails written by earlier versions


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    width: int
    height: int
    mimetype: str = MIMETYPE

    def describe(self) -> dict[str, object]:
        """metadata.thumbnail of the file."""
        return {"width": self.width, "height": self.height, "mimetype": self.mimetype}


def suffix(mimetype: str) -> str:
    return SUFFIXES[mimetype]


def encode(picture: Image.Image) -> Thumbnail:
    """Longest side THUMBNAIL_SIDE (never enlarged), WebP. The pixels are copied into a new image, so
    no EXIF (GPS, serial numbers), XMP or ICC profile of the source can reach the thumbnail."""
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    has_alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
    mode = "RGBA" if has_alpha else "RGB"
    if picture.mode != mode:
        picture = picture.convert(mode)
    clean = Image.frombytes(mode, picture.size, picture.tobytes())
    out = io.BytesIO()
    clean.save(out, "WEBP", quality=80)
    return Thumbnail(out.getvalue(), clean.width, clean.height)
