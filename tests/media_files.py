"""Real media files for the media tests, made here by the libraries that write them (Pillow and its
plugins, PyAV, mutagen, the standard library) or, for hostile PDFs, byte by byte."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import struct
import wave
import zlib
from collections.abc import Iterable
from typing import Any

import av
import pillow_heif
from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, ID3, TALB, TIT2, TPE1
from mutagen.oggopus import OggOpus
from PIL import Image, ImageDraw

pillow_heif.register_heif_opener()  # Pillow writes HEIC with it (AVIF it writes itself)

GPS_IFD, EXIF_IFD = 0x8825, 0x8769


# images -------------------------------------------------------------------------------------------
def picture(width: int, height: int) -> Image.Image:
    """Red left half, blue right half, a green square top left: orientation shows in any thumbnail."""
    image = Image.new("RGB", (width, height), (220, 30, 30))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 2, 0, width, height), fill=(30, 30, 220))
    draw.rectangle((0, 0, width // 8, height // 8), fill=(30, 200, 30))
    return image


def camera_exif(orientation: int | None = None) -> Image.Exif:
    """A phone's EXIF: camera, capture time with its offset, and a GPS position that must not leak."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Apple", "iPhone 15 Pro", "2025:01:02 03:04:05"
    if orientation:
        exif[0x0112] = orientation
    details = exif.get_ifd(EXIF_IFD)
    details[0x9003], details[0x9011] = "2024:07:14 18:30:05", "+02:00"
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (48.0, 51.0, 29.6), 3: "E", 4: (2.0, 17.0, 40.2)})  # the Eiffel tower
    return exif


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def animated(fmt: str, frames: int = 6, size: tuple[int, int] = (120, 80)) -> bytes:
    """GIF, WEBP or PNG (APNG): the first frame is red, the others shades of green."""
    images = [Image.new("RGB", size, (220, 30, 30))] + [
        Image.new("RGB", size, (0, 40 * i, 0)) for i in range(1, frames)
    ]
    return encoded(images[0], fmt, save_all=True, append_images=images[1:], duration=80, loop=0)


def solid_png(width: int, height: int) -> bytes:
    """A valid PNG of one colour, compressed row by row: a few hundred KiB for any size, made without
    ever holding the pixels (Pillow would need width x height x 4 bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\0" + b"\x80\x40\x20" * width
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


# PDF ----------------------------------------------------------------------------------------------
def pillow_pdf(pages: int, title: str, author: str) -> bytes:
    """A multi-page PDF as Pillow writes it: one image per page, the first one `picture`."""
    images = [picture(400, 300)] + [Image.new("RGB", (400, 300), (0, 0, 30 * i)) for i in range(1, pages)]
    return encoded(images[0], "PDF", save_all=True, append_images=images[1:], title=title, author=author)


def pdf(objects: list[bytes], trailer: bytes = b"") -> bytes:
    """A PDF of the given objects (1 is the catalog), with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref)
    return bytes(out)


def stream(data: bytes, extra: bytes = b"") -> bytes:
    packed = zlib.compress(data)
    return b"<< /Length %d /Filter /FlateDecode %s >>\nstream\n%s\nendstream" % (len(packed), extra, packed)


def many_pages_pdf(pages: int) -> bytes:
    """`pages` pages sharing one small content stream: a tiny file that claims to be a book."""
    kids = b" ".join(b"%d 0 R" % (4 + i) for i in range(pages))
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R >>"
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
            stream(b"0 0.5 0 rg 100 100 400 600 re f"),
        ]
        + [page] * pages
    )


def slow_pdf(operators: int) -> bytes:
    """One page painted by a function-based shading whose PostScript function runs `operators`
    operators for every pixel: PDFium spends minutes on it, a KiB of bytes, little memory."""
    function = b"{ " + b"1 add 0.5 mul " * operators + b"pop dup 0.5 }"
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            (
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 600 600] /Resources << /Shading << /S 4 0 R >> >>"
                b" /Contents 6 0 R >>"
            ),
            (
                b"<< /ShadingType 1 /ColorSpace /DeviceRGB /Domain [0 1 0 1] /Matrix [600 0 0 600 0 0]"
                b" /Function 5 0 R >>"
            ),
            stream(function, b"/FunctionType 4 /Domain [0 1 0 1] /Range [0 1 0 1 0 1]"),
            stream(b"/S sh"),
        ]
    )


PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def rc4(key: bytes, data: bytes) -> bytes:
    s, j = list(range(256)), 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: bytes) -> bytes:
    """Encrypted with the standard security handler, revision 2 (40-bit RC4, PDF 1.1): the O and U
    entries as the specification computes them. With a user password nothing opens without it."""
    padded = (user_password + PASSWORD_PAD)[:32]
    owner = rc4(hashlib.md5((b"owner" + PASSWORD_PAD)[:32]).digest()[:5], padded)
    file_id = os.urandom(16)
    permissions = -4
    key = hashlib.md5(padded + owner + struct.pack("<i", permissions) + file_id).digest()[:5]
    user = rc4(key, PASSWORD_PAD)
    encrypt = b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (
        owner.hex().encode(),
        user.hex().encode(),
        permissions,
    )
    content = b""  # an empty page: no stream needs encrypting
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 5 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            encrypt,
        ],
        b"/Encrypt 6 0 R /ID [<%s> <%s>]" % (file_id.hex().encode(), file_id.hex().encode()),
    )


# video --------------------------------------------------------------------------------------------
def video(
    fmt: str,
    codec: str,
    *,
    seconds: float = 3,
    size: tuple[int, int] = (320, 240),
    fps: int = 25,
    audio_codec: str | None = None,
    rotation: int = 0,
) -> bytes:
    """A video encoded by PyAV: frames of `picture`, a grey bar moving along the bottom; a silent
    stereo track when audio_codec is given; a display matrix turning it by `rotation` degrees."""
    out = io.BytesIO()
    width, height = size
    with av.open(out, "w", format=fmt) as container:
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        sound: Any = container.add_stream(audio_codec, rate=48000, layout="stereo") if audio_codec else None
        base = picture(width, height)
        frames = int(seconds * fps)
        for i in range(frames):
            image = base.copy()
            ImageDraw.Draw(image).rectangle((0, height - 10, width * i // frames, height), fill=(128, 128, 128))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            for packet in silence(sound, seconds):
                container.mux(packet)
    return out.getvalue()


def silence(stream: Any, seconds: float) -> Iterable[av.Packet]:
    context = stream.codec_context
    size = context.frame_size or 1024
    for start in range(0, int(seconds * context.sample_rate), size):
        frame = av.AudioFrame(format=context.format.name, layout=context.layout.name, samples=size)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate, frame.pts = context.sample_rate, start
        yield from stream.encode(frame)
    yield from stream.encode()


def video_claiming(width: int, height: int) -> bytes:
    """A WebM whose track header claims width x height and whose packets are noise: FFmpeg cannot
    learn the real size from the bitstream, so the claim is all there is."""
    source: Any = av.open(io.BytesIO(video("webm", "libvpx-vp9", seconds=1, size=(64, 48))))
    out = io.BytesIO()
    with source, av.open(out, "w", format="webm") as container:
        template = source.streams.video[0]
        stream = container.add_stream_from_template(template)
        stream.codec_context.width, stream.codec_context.height = width, height
        for packet in source.demux(template):
            if packet.dts is None:
                continue
            noise = av.Packet(os.urandom(packet.size))
            noise.pts, noise.dts, noise.time_base, noise.is_keyframe = packet.pts, packet.dts, packet.time_base, True
            noise.stream = stream
            container.mux(noise)
    return out.getvalue()


# audio --------------------------------------------------------------------------------------------
def tone(fmt: str, codec: str, *, seconds: float = 2, rate: int = 44100) -> bytes:
    """Stereo silence encoded by PyAV (the codecs' own tag writers stay out: mutagen adds tags)."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream: Any = container.add_stream(codec, rate=rate, layout="stereo")
        for packet in silence(stream, seconds):
            container.mux(packet)
    return out.getvalue()


def cover_png(side: int = 400, noise: bool = False) -> bytes:
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)) if noise else picture(side, side)
    return encoded(image, "PNG")


def mp3_with_tags(cover: bytes, **tags: str) -> bytes:
    data = io.BytesIO(tone("mp3", "libmp3lame"))
    id3 = ID3()
    id3.add(TIT2(text=tags["title"]))
    id3.add(TPE1(text=tags["artist"]))
    id3.add(TALB(text=tags["album"]))
    id3.add(APIC(mime="image/png", type=3, desc="front", data=cover))
    id3.save(data)
    return data.getvalue()


def flac_picture(cover: bytes) -> Picture:
    picture_block = Picture()
    picture_block.type, picture_block.mime, picture_block.data = 3, "image/png", cover
    return picture_block


def flac_with_tags(cover: bytes, **tags: str) -> bytes:
    data = io.BytesIO(tone("flac", "flac"))
    flac = FLAC(data)
    flac.update(tags)
    flac.add_picture(flac_picture(cover))
    data.seek(0)
    flac.save(data)
    return data.getvalue()


def opus_with_tags(cover: bytes, **tags: str) -> bytes:
    data = io.BytesIO(tone("ogg", "libopus", rate=48000))
    opus = OggOpus(data)
    opus.update(tags)
    opus["metadata_block_picture"] = [base64.b64encode(flac_picture(cover).write()).decode()]
    data.seek(0)
    opus.save(data)
    return data.getvalue()


def wav(seconds: float = 1.5, rate: int = 8000) -> bytes:
    """A 440 Hz sine, mono, 16-bit, by the standard library's wave module."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / rate)))
                for i in range(int(seconds * rate))
            )
        )
    return out.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(1, int(len(data) * keep))]


def garbage_tailed(data: bytes, tail: int = 64 * 1024) -> bytes:
    return data + os.urandom(tail)
