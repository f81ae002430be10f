"""Audio: PyAV (FFmpeg) reads the stream, the tags (ID3, Vorbis comments, MP4 atoms: FFmpeg names
them alike) and the embedded cover art, which becomes the thumbnail."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
from PIL import Image

from service.media import image
from service.media.result import Found, Unreadable, check_pixels, decode_failed
from service.media.thumbnail import THUMBNAIL_SIDE

TAGS = ("title", "artist", "album")
MAX_TAG = 500  # characters kept of a tag
MAX_PACKETS = 200  # demuxed in search of one decodable frame
DECODE_ERRORS = (av.FFmpegError, ValueError, OSError, IndexError, MemoryError)


def analyse(path: Path, mimetype: str) -> Found:
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return describe(container, path)
    except Unreadable:
        raise
    except DECODE_ERRORS as e:
        raise decode_failed("audio", path, e) from None


def describe(container: Any, path: Path) -> Found:
    stream = next(iter(container.streams.audio), None)
    if stream is None:
        raise Unreadable("unreadable audio: no audio stream")
    cover = cover_art(container, path)  # first: FFmpeg hands the attached picture out before any audio
    check_decodable(container, stream)
    context = stream.codec_context
    metadata: dict[str, Any] = {
        "codec": str(context.codec.canonical_name),
        "sample_rate": context.sample_rate,
        "channels": context.channels,
    }
    seconds = duration(container, stream)
    if seconds is not None:
        metadata["duration"] = seconds
    bit_rate = stream.bit_rate or container.bit_rate
    if bit_rate:
        metadata["bit_rate"] = bit_rate
    tags = read_tags(container, stream)
    if tags:
        metadata["tags"] = tags
    return Found(metadata, cover)


def duration(container: Any, stream: Any) -> float | None:
    """Seconds, from the container (FFmpeg's AV_TIME_BASE, microseconds) or else the stream."""
    if container.duration:
        return round(container.duration / 1_000_000, 3)
    if stream.duration and stream.time_base:
        return round(float(stream.duration * stream.time_base), 3)
    return None


def check_decodable(container: Any, stream: Any) -> None:
    for count, packet in enumerate(container.demux(stream)):
        if count >= MAX_PACKETS:
            break
        if packet.decode():
            return
    raise Unreadable("unreadable audio: no frame could be decoded")


def read_tags(container: Any, stream: Any) -> dict[str, str]:
    """Ogg keeps its tags on the stream, the others on the container."""
    found: dict[str, str] = {}
    for source in (stream.metadata, container.metadata):
        for key, value in source.items():
            key = key.lower()
            text = "".join(c for c in str(value) if c.isprintable()).strip()[:MAX_TAG]
            if key in TAGS and key not in found and text:
                found[key] = text
    return found


def is_cover_art(stream: Any) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def cover_art(container: Any, path: Path) -> Image.Image | None:
    """The first attached picture, decoded small; a broken cover does not make the audio unreadable."""
    stream = next((s for s in container.streams.video if is_cover_art(s)), None)
    if stream is None:
        return None
    packet = next(iter(container.demux(stream)), None)
    if packet is None or not packet.size:
        return None
    try:
        with Image.open(io.BytesIO(bytes(packet))) as im:
            check_pixels(*im.size, "cover art")
            im.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            return im.copy()
    except (Unreadable, *image.DECODE_ERRORS):
        return None
