"""Media beyond JPEG through a real upload and the real worker, checked in the files API: HEIC, AVIF
and animated images, PDF, video and audio get their documented metadata and a thumbnail; hostile
versions of each end in a definite state, with a reason when FAILED."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from tests import media_files as media
from tests.uploading import UPLOAD_ENV, sha256, upload, wait_for_status

SETTINGS_ENV = UPLOAD_ENV
IMAGE_KEYS = {
    "sha256",
    "size",
    "claimed_mimetype",
    "mimetype",
    "width",
    "height",
    "format",
    "animated",
    "frames",
    "thumbnail",
}


async def processed(client: Any, user: Any, data: bytes, name: str) -> dict:
    file_id = await upload(client, user, data, name)
    body = await wait_for_status(client, user, file_id, timeout=60)
    assert body["metadata"] is None or body["metadata"].get("sha256") in (None, sha256(data))
    return body


async def thumbnail(client: Any, user: Any, body: dict) -> tuple[bytes, Image.Image]:
    assert body["thumbnail"] == f"/api/files/{body['id']}/thumbnail", body
    r = await client.get(body["thumbnail"], headers=user.headers)
    assert r.status == 200 and r.headers["Content-Type"] == "image/webp"
    data = await r.read()
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "WEBP" and body["metadata"]["thumbnail"] == {
        "width": image.width,
        "height": image.height,
        "mimetype": "image/webp",
    }
    return data, image


def colour_at(image: Image.Image, x: float, y: float) -> str:
    """Which of `media.picture`'s colours is at (x, y), as fractions of the width and height."""
    pixel = image.convert("RGB").getpixel((int(x * (image.width - 1)), int(y * (image.height - 1))))
    assert isinstance(pixel, tuple)
    return max(zip(("red", "green", "blue"), pixel[:3], strict=True), key=lambda c: c[1])[0]


def riff_chunks(webp: bytes) -> list[bytes]:
    """The chunk types of a WebP file (RIFF): EXIF and XMP would be chunks of their own."""
    chunks, offset = [], 12
    while offset + 8 <= len(webp):
        size = int.from_bytes(webp[offset + 4 : offset + 8], "little")
        chunks.append(webp[offset : offset + 4])
        offset += 8 + size + (size & 1)
    return chunks


async def no_missing_thumbnail(client: Any, user: Any, body: dict) -> None:
    assert body["thumbnail"] is None and "thumbnail" not in body["metadata"]
    r = await client.get(f"/api/files/{body['id']}/thumbnail", headers=user.headers)
    assert r.status == 404 and (await r.json())["code"] == "THUMBNAIL_NOT_FOUND"


# images ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt, name, mimetype, reported",
    [
        ("HEIF", "IMG_0001.HEIC", "image/heic", "HEIF"),
        ("AVIF", "photo.avif", "image/avif", "AVIF"),
    ],
)
async def test_heic_and_avif_photos_get_metadata_and_a_thumbnail(served, user, fmt, name, mimetype, reported) -> None:
    data = media.encoded(media.picture(1200, 900), fmt, exif=media.camera_exif().tobytes())
    body = await processed(served, user, data, name)
    assert body["status"] == "COMPLETED" and body["type"] == "IMAGE" and body["mimetype"] == mimetype, body
    meta = body["metadata"]
    assert (meta["width"], meta["height"], meta["format"], meta["animated"], meta["frames"]) == (
        1200,
        900,
        reported,
        False,
        1,
    )
    assert meta["camera"] == {"make": "Apple", "model": "iPhone 15 Pro"}
    assert meta["taken_at"] == "2024-07-14T18:30:05+02:00"
    _, thumb = await thumbnail(served, user, body)
    assert thumb.size == (320, 240)
    assert (colour_at(thumb, 0.25, 0.5), colour_at(thumb, 0.75, 0.5), colour_at(thumb, 0.02, 0.02)) == (
        "red",
        "blue",
        "green",
    )


@pytest.mark.parametrize("fmt, mimetype", [("GIF", "image/gif"), ("WEBP", "image/webp"), ("PNG", "image/png")])
async def test_animated_images_are_marked_and_thumbnailed_from_the_first_frame(served, user, fmt, mimetype) -> None:
    body = await processed(served, user, media.animated(fmt, frames=6), f"loop.{fmt.lower()}")
    assert body["status"] == "COMPLETED" and body["mimetype"] == mimetype, body
    meta = body["metadata"]
    assert (meta["animated"], meta["frames"], meta["width"], meta["height"]) == (True, 6, 120, 80)
    _, thumb = await thumbnail(served, user, body)
    assert thumb.size == (120, 80) and colour_at(thumb, 0.5, 0.5) == "red"  # frame 0; the others are green


async def test_camera_and_capture_time_are_kept_and_gps_never_is(served, user) -> None:
    exif = media.camera_exif(orientation=6)
    data = media.encoded(media.picture(800, 600), "JPEG", exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as original:
        assert original.getexif().get_ifd(media.GPS_IFD)[1] == "N"  # the upload does carry a position

    body = await processed(served, user, data, "IMG_2024.jpg")
    assert body["status"] == "COMPLETED", body["error"]
    meta = body["metadata"]
    assert set(meta) == IMAGE_KEYS | {"orientation", "camera", "taken_at"}  # nothing else of the EXIF
    assert (meta["width"], meta["height"], meta["orientation"]) == (600, 800, 6)
    assert meta["camera"] == {"make": "Apple", "model": "iPhone 15 Pro"}
    assert meta["taken_at"] == "2024-07-14T18:30:05+02:00"
    assert "48" not in json.dumps(meta["camera"]) and "GPS" not in json.dumps(body)

    raw, thumb = await thumbnail(served, user, body)
    assert thumb.size == (240, 320) and colour_at(thumb, 0.5, 0.25) == "red"  # turned as displayed
    assert not thumb.getexif() and "exif" not in thumb.info and "xmp" not in thumb.info
    assert set(riff_chunks(raw)) <= {b"VP8 ", b"VP8L", b"VP8X", b"ALPH"}, riff_chunks(raw)
    assert b"GPS" not in raw and b"Exif" not in raw and b"Apple" not in raw


# PDF ---------------------------------------------------------------------------------------------
async def test_a_multi_page_pdf_gets_pages_title_author_and_a_first_page_thumbnail(served, user) -> None:
    body = await processed(served, user, media.pillow_pdf(3, "Quarterly report", "Ada Lovelace"), "report.pdf")
    assert body["status"] == "COMPLETED" and body["type"] == "DOCUMENT" and body["mimetype"] == "application/pdf"
    meta = body["metadata"]
    assert (meta["page_count"], meta["title"], meta["author"], meta["encrypted"]) == (
        3,
        "Quarterly report",
        "Ada Lovelace",
        False,
    )
    _, thumb = await thumbnail(served, user, body)
    assert thumb.size == (320, 240) and colour_at(thumb, 0.25, 0.5) == "red" and colour_at(thumb, 0.75, 0.5) == "blue"


@pytest.mark.parametrize("password, page_count", [(b"secret", None), (b"", 2)])
async def test_an_encrypted_pdf_completes_marked_encrypted_without_a_thumbnail(
    served, user, password, page_count
) -> None:
    body = await processed(served, user, media.encrypted_pdf(password), "locked.pdf")
    assert body["status"] == "COMPLETED" and body["type"] == "DOCUMENT", body
    assert body["metadata"]["encrypted"] is True and body["metadata"].get("page_count") == page_count
    await no_missing_thumbnail(served, user, body)


async def test_a_pdf_of_thousands_of_pages_renders_only_its_first(served, user) -> None:
    body = await processed(served, user, media.many_pages_pdf(5000), "book.pdf")
    assert body["status"] == "COMPLETED" and body["metadata"]["page_count"] == 5000, body
    _, thumb = await thumbnail(served, user, body)
    assert thumb.height == 320 and colour_at(thumb, 0.5, 0.5) == "green"


# video -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt, codec, audio_codec, mimetype",
    [
        ("mp4", "libx264", "aac", "video/mp4"),
        ("webm", "libvpx-vp9", "libopus", "video/webm"),
    ],
)
async def test_a_video_gets_duration_codecs_and_a_poster_frame(served, user, fmt, codec, audio_codec, mimetype) -> None:
    data = media.video(fmt, codec, seconds=3, size=(480, 270), audio_codec=audio_codec)
    body = await processed(served, user, data, f"clip.{fmt}")
    assert body["status"] == "COMPLETED" and body["type"] == "VIDEO" and body["mimetype"] == mimetype, body
    meta = body["metadata"]
    assert meta["container"] == fmt and meta["video_codec"] == {"libx264": "h264", "libvpx-vp9": "vp9"}[codec]
    assert meta["audio_codec"] == {"aac": "aac", "libopus": "opus"}[audio_codec]
    assert 2.9 <= meta["duration"] <= 3.1 and meta["fps"] == 25 and meta["bit_rate"] > 0
    assert (meta["width"], meta["height"]) == (480, 270)
    _, thumb = await thumbnail(served, user, body)
    assert thumb.size == (320, 180) and colour_at(thumb, 0.25, 0.4) == "red" and colour_at(thumb, 0.75, 0.4) == "blue"


async def test_a_rotated_video_is_measured_and_shown_as_played(served, user) -> None:
    data = media.video("mp4", "libx264", seconds=1, size=(320, 240), rotation=90)  # a phone held upright
    body = await processed(served, user, data, "upright.mp4")
    assert body["status"] == "COMPLETED", body["error"]
    assert (body["metadata"]["width"], body["metadata"]["height"]) == (240, 320)
    _, thumb = await thumbnail(served, user, body)
    # 90 degrees counter-clockwise, as players (and Debian's ffmpeg) turn it: the left half at the bottom
    assert thumb.size == (240, 320) and colour_at(thumb, 0.5, 0.75) == "red" and colour_at(thumb, 0.5, 0.25) == "blue"
    assert colour_at(thumb, 0.02, 0.98) == "green"


@pytest.mark.parametrize(
    "width, height, reason",
    [
        (100_000, 100_000, "video declares no valid dimensions (0x0)"),  # FFmpeg refuses the claim
        (16_000, 16_000, "video of 16000x16000 pixels exceeds the 100000000 pixel limit"),  # FFmpeg would decode it
    ],
)
async def test_a_video_claiming_enormous_frames_fails_before_decoding(served, user, width, height, reason) -> None:
    body = await processed(served, user, media.video_claiming(width, height), "huge.webm")
    assert body["status"] == "FAILED" and body["type"] == "VIDEO", body
    assert body["error"] == reason


# audio -------------------------------------------------------------------------------------------
TAGS = {"title": "Clair de lune", "artist": "Claude Debussy", "album": "Suite bergamasque"}


@pytest.mark.parametrize(
    "make, name, mimetype, codec, rate",
    [
        (media.mp3_with_tags, "song.mp3", "audio/mpeg", "mp3", 44100),
        (media.flac_with_tags, "song.flac", "audio/flac", "flac", 44100),
        (media.opus_with_tags, "song.opus", "audio/ogg", "opus", 48000),
    ],
)
async def test_audio_gets_duration_tags_and_its_cover_art_as_thumbnail(
    served, user, make, name, mimetype, codec, rate
) -> None:
    data = make(media.cover_png(400), **TAGS)
    body = await processed(served, user, data, name)
    assert body["status"] == "COMPLETED" and body["type"] == "AUDIO" and body["mimetype"] == mimetype, body
    meta = body["metadata"]
    assert (meta["codec"], meta["sample_rate"], meta["channels"], meta["tags"]) == (codec, rate, 2, TAGS)
    assert 1.9 <= meta["duration"] <= 2.2 and meta["bit_rate"] > 0
    _, thumb = await thumbnail(served, user, body)
    assert thumb.size == (320, 320) and colour_at(thumb, 0.25, 0.5) == "red" and colour_at(thumb, 0.75, 0.5) == "blue"


async def test_an_mp3_whose_cover_art_outgrows_the_sniffed_head_is_still_audio(served, user) -> None:
    data = media.mp3_with_tags(media.cover_png(700, noise=True), **TAGS)  # a 1.4 MiB ID3 tag before the audio
    assert len(data) > 1024 * 1024 and data.startswith(b"ID3")
    body = await processed(served, user, data, "big-cover.mp3")
    assert body["status"] == "COMPLETED" and body["type"] == "AUDIO" and body["mimetype"] == "audio/mpeg", body
    assert body["metadata"]["tags"] == TAGS and body["metadata"]["codec"] == "mp3"
    _, thumb = await thumbnail(served, user, body)
    assert thumb.size == (320, 320)


async def test_a_wav_from_the_standard_library(served, user) -> None:
    body = await processed(served, user, media.wav(seconds=1.5, rate=8000), "beep.wav")
    assert body["status"] == "COMPLETED" and body["type"] == "AUDIO" and body["mimetype"] == "audio/x-wav", body
    meta = body["metadata"]
    assert (meta["codec"], meta["sample_rate"], meta["channels"], meta["duration"], meta["bit_rate"]) == (
        "pcm_s16le",
        8000,
        1,
        1.5,
        128000,
    )
    await no_missing_thumbnail(served, user, body)


# hostile versions of each ------------------------------------------------------------------------
def originals() -> dict[str, bytes]:
    cover = media.cover_png(200)
    return {
        "jpg": media.encoded(media.picture(800, 600), "JPEG"),
        "heic": media.encoded(media.picture(800, 600), "HEIF"),
        "avif": media.encoded(media.picture(800, 600), "AVIF"),
        "gif": media.animated("GIF"),
        "webp": media.animated("WEBP"),
        "png": media.animated("PNG"),
        "pdf": media.pillow_pdf(3, "T", "A"),
        "mp4": media.video("mp4", "libx264", audio_codec="aac"),
        "webm": media.video("webm", "libvpx-vp9", audio_codec="libopus"),
        "mp3": media.mp3_with_tags(cover, **TAGS),
        "flac": media.flac_with_tags(cover, **TAGS),
        "opus": media.opus_with_tags(cover, **TAGS),
        "wav": media.wav(),
    }


# What each damaged file becomes. Cut in half: formats whose index or header points past the end fail;
# streams that decoders play as far as they go complete (as any player would play them). A garbage tail
# after the end of the data is ignored by every decoder.
TRUNCATED_FAILS = {
    "jpg": "unreadable image: image file is truncated",
    "heic": "unreadable image: Invalid input",
    "avif": "unreadable image: not a valid image/avif",
    "webp": "unreadable image",
    "pdf": "unreadable PDF",
    "mp4": "unreadable video: Invalid data found when processing input",
    "flac": "unreadable audio: End of file",
    "opus": "unreadable audio: End of file",
}
TRUNCATED_COMPLETES = {"gif", "png", "webm", "mp3", "wav"}


async def test_truncated_and_garbage_tailed_files_end_definitely_and_the_worker_goes_on(served, user) -> None:
    files = originals()
    assert set(TRUNCATED_FAILS) | TRUNCATED_COMPLETES == set(files)
    ids = {}
    for name, data in files.items():
        ids[f"truncated.{name}"] = await upload(served, user, media.truncated(data), f"truncated.{name}")
        ids[f"tailed.{name}"] = await upload(served, user, media.garbage_tailed(data), f"tailed.{name}")
    outcomes = {}
    for label, file_id in ids.items():
        body = await wait_for_status(served, user, file_id, timeout=120)
        outcomes[label] = (body["status"], body["error"], body["type"])
    for name in files:
        status, error, kind = outcomes[f"tailed.{name}"]
        assert status == "COMPLETED" and kind != "OTHER", (name, error)
        status, error, kind = outcomes[f"truncated.{name}"]
        if name in TRUNCATED_FAILS:
            assert status == "FAILED" and error.startswith(TRUNCATED_FAILS[name]), (name, error)
            assert ".part" not in error and "chunkd-test" not in error, error  # no path of the worker's
        else:
            assert status == "COMPLETED" and kind != "OTHER", (name, error)
