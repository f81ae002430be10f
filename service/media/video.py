"""Video: PyAV (FFmpeg) reads the container's streams and decodes one poster frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
from PIL import Image

from service.media import audio
from service.media.result import Found, Unreadable, check_pixels, decode_failed
from service.media.thumbnail import THUMBNAIL_SIDE
from service.models import FileType

POSTER_AT = 0.10  # of the duration: past a fade-in from black, cheap to reach (the keyframe before it)
MAX_PACKETS = 2_000  # demuxed in search of the poster frame before giving up on the file
DECODE_ERRORS = (av.FFmpegError, ValueError, OSError, IndexError, MemoryError)


def analyse(path: Path, mimetype: str) -> Found:
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            streams = [s for s in container.streams.video if not audio.is_cover_art(s)]
            if not streams:  # an audio-only WebM, MP4 or Matroska (what browsers record)
                found = audio.describe(container, path)
                found.kind = FileType.AUDIO
                return found
            return describe(container, streams[0], mimetype)
    except Unreadable:
        raise
    except DECODE_ERRORS as e:
        raise decode_failed("video", path, e) from None


def describe(container: Any, stream: Any, mimetype: str) -> Found:
    context = stream.codec_context
    width, height = context.width, context.height
    check_pixels(width, height, "video")  # before a frame of that size is ever allocated
    metadata: dict[str, Any] = {"container": container_name(container, mimetype), "video_codec": codec_name(stream)}
    duration = audio.duration(container, stream)
    if duration is not None:
        metadata["duration"] = duration
    sound = next(iter(container.streams.audio), None)
    if sound is not None:
        metadata["audio_codec"] = codec_name(sound)
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        metadata["fps"] = round(float(rate), 3)
    if container.bit_rate:
        metadata["bit_rate"] = container.bit_rate
    frame = poster_frame(container, stream, duration)
    rotation = frame.rotation  # the display matrix: how the player turns the picture
    if rotation % 180:
        width, height = height, width
    metadata.update(width=width, height=height)
    return Found(metadata, picture(frame, rotation))


def poster_frame(container: Any, stream: Any, duration: float | None) -> Any:
    """The keyframe at or before POSTER_AT of the duration (one seek, one decode), else the first frame."""
    if duration and stream.time_base:
        try:
            container.seek(int(duration * POSTER_AT / stream.time_base), stream=stream, backward=True)
        except av.FFmpegError:
            container.seek(0)
    for count, packet in enumerate(container.demux(stream)):
        if count >= MAX_PACKETS:
            break
        for frame in packet.decode():
            return frame
    raise Unreadable("unreadable video: no frame could be decoded")


def picture(frame: Any, rotation: int) -> Image.Image:
    """Scaled by FFmpeg to thumbnail size first (a 4K frame never becomes a 4K RGB image), then turned."""
    scale = THUMBNAIL_SIDE / max(frame.width, frame.height)
    width, height = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
    image = frame.reformat(width=width, height=height, format="rgb24").to_image()
    return image.rotate(rotation, expand=True) if rotation else image


def container_name(container: Any, mimetype: str) -> str:
    """FFmpeg names demuxers by families (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`): the member the
    MIME type names, else the first."""
    names = str(container.format.name).split(",")
    subtype = mimetype.partition("/")[2].removeprefix("x-")
    return subtype if subtype in names else names[0]


def codec_name(stream: Any) -> str:
    """The codec's own name (`h264`, `mp3`), not the decoder's (`mp3float`)."""
    return str(stream.codec_context.codec.canonical_name)
