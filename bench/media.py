"""Thumbnails per second and peak memory of chunkd's media analysis, each against a naive way of making
the same thumbnail, measured in the same run on the same files.

    python bench/media.py                 # makes the files (about a minute), 5 rounds of each
    python bench/media.py --rounds 10 --keep /tmp/media   # keeps the files for a second run

Cases, and their baselines:
  jpeg  24 MP JPEG (EXIF orientation 6)  chunkd: thumbnail() before exif_transpose (JPEG draft decoding)
                                          naive: decode, exif_transpose, then thumbnail()
  heic  12 MP HEIC                       chunkd: the same order (HEIC has no draft mode: no gain expected)
                                          naive: decode, exif_transpose, then thumbnail()
  pdf   50-page PDF (text and shapes)     chunkd: first page rendered straight at thumbnail scale
                                          naive: first page rendered at 150 dpi, then thumbnail()
  video 60 s 1080p H.264 (2 s GOP)       chunkd: seek to the keyframe before 10 %, decode one frame, scale
                                          naive: Debian's ffmpeg CLI seeking to that same frame
                                          (-ss before -i with -noaccurate_seek), scaled to 320 px
Every measurement runs in a fresh Python process: its peak RSS (VmHWM, or the largest ffmpeg child's
ru_maxrss for the CLI) is that method's alone, the interpreter and libraries included (about 45 MiB). `pool`
is chunkd's whole path as the worker runs it: DecoderPool.analyse, child process and IPC included
(after one warm-up file), with the child's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THUMBNAIL_SIDE = 320
POSTER_AT = 0.10


# the files ---------------------------------------------------------------------------------------
def make_files(directory: Path) -> dict[str, Path]:
    from PIL import Image, ImageFilter

    from tests import media_files as media

    paths = {
        name: directory / f"{name}.{suffix}"
        for name, suffix in (("jpeg", "jpg"), ("heic", "heic"), ("pdf", "pdf"), ("video", "mp4"))
    }
    if all(p.exists() for p in paths.values()):
        return paths

    def photo(width: int, height: int) -> Image.Image:
        """Detail JPEG and HEVC have to work for: noise blurred a little over a painted scene."""
        base = media.picture(width, height)
        noise = Image.effect_noise((width, height), 40).filter(ImageFilter.GaussianBlur(1)).convert("RGB")
        return Image.blend(base, noise, 0.35)

    print("making a 24 MP JPEG, a 12 MP HEIC, a 50-page PDF and a 60 s 1080p video ...", file=sys.stderr)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo(6000, 4000).save(paths["jpeg"], "JPEG", quality=90, exif=exif.tobytes())
    photo(4000, 3000).save(paths["heic"], "HEIF", quality=80)
    paths["pdf"].write_bytes(text_pdf(50))
    write_video(paths["video"], seconds=60)
    return paths


def text_pdf(pages: int) -> bytes:
    """Pages of Helvetica text and a few shapes, as a report is: PDFium lays out text and fills paths."""
    from tests import media_files as media

    line = b"The quick brown fox jumps over the lazy dog; chunkd renders only the first page. "
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for page in range(pages):
        text = b"BT /F1 10 Tf 50 740 Td 12 TL " + b"".join(b"(%d: %s) '\n" % (i, line) for i in range(55)) + b"ET"
        shapes = b"".join(b"%.2f 0.3 0.6 rg %d 30 40 40 re f\n" % (i / 10, 50 + i * 50) for i in range(10))
        objects.append(media.stream(b"q " + shapes + b" Q 0 0 0 rg " + text + b" %% page %d" % page))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 3 0 R >> >> >>" % len(objects)
        )
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), pages)
    return media.pdf(objects)


def write_video(path: Path, seconds: int) -> None:
    import av
    from PIL import ImageDraw

    from tests import media_files as media

    width, height, fps = 1920, 1080, 25
    base = media.picture(width, height)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": str(2 * fps)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            image = base.copy()
            ImageDraw.Draw(image).rectangle((i * 7 % width, 400, i * 7 % width + 200, 600), fill=(250, 250, 0))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# the methods, each run in a fresh process by measure() ------------------------------------------
def chunkd_image(path: Path) -> None:
    from service.media import image, thumbnail

    thumbnail.encode(image.analyse(path, "image/jpeg").picture)  # type: ignore[arg-type]


def naive_image(path: Path) -> None:
    import pillow_heif
    from PIL import Image, ImageOps

    pillow_heif.register_heif_opener()
    with Image.open(path) as im:
        upright = ImageOps.exif_transpose(im)  # every pixel decoded, then turned
    upright.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    upright.save(io.BytesIO(), "WEBP", quality=80)


def chunkd_pdf(path: Path) -> None:
    from service.media import pdf, thumbnail

    thumbnail.encode(pdf.analyse(path, "application/pdf").picture)  # type: ignore[arg-type]


def naive_pdf(path: Path) -> None:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(path))
    page = document[0]
    image = page.render(scale=150 / 72).to_pil()
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    image.save(io.BytesIO(), "WEBP", quality=80)
    page.close()
    document.close()


def chunkd_video(path: Path) -> None:
    from service.media import thumbnail, video

    thumbnail.encode(video.analyse(path, "video/mp4").picture)  # type: ignore[arg-type]


def ffmpeg_cli(path: Path) -> None:
    """ffprobe for the duration (not PyAV: this runner stays small, so the largest child is ffmpeg)."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    at = float(probe.stdout.strip()) * POSTER_AT
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-ss",
                f"{at:.3f}",
                "-noaccurate_seek",
                "-i",
                str(path),
                "-frames:v",
                "1",
                "-vf",
                f"scale={THUMBNAIL_SIDE}:-2",
                "-y",
                f"{tmp}/poster.webp",
            ],
            check=True,
        )


METHODS = {
    "chunkd_image": chunkd_image,
    "naive_image": naive_image,
    "chunkd_pdf": chunkd_pdf,
    "naive_pdf": naive_pdf,
    "chunkd_video": chunkd_video,
    "ffmpeg_cli": ffmpeg_cli,
}
CASES = {
    "jpeg": ("chunkd_image", "naive_image"),
    "heic": ("chunkd_image", "naive_image"),
    "pdf": ("chunkd_pdf", "naive_pdf"),
    "video": ("chunkd_video", "ffmpeg_cli"),
}


def run_method(method: str, path: Path, rounds: int) -> None:
    """In the fresh process: one warm-up (imports, page cache), then `rounds` timed runs."""
    METHODS[method](path)
    started = time.perf_counter()
    for _ in range(rounds):
        METHODS[method](path)
    seconds = time.perf_counter() - started
    # The CLI's memory is ffmpeg's (the largest child), not this runner's; for the others VmHWM, not
    # ru_maxrss, which Linux carries over from the parent across fork and exec.
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if method == "ffmpeg_cli" else vm_hwm_kib("self")
    print(json.dumps({"per_second": rounds / seconds, "rss_mib": peak_kib / 1024}))


def vm_hwm_kib(pid: str | int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))


def measure(method: str, path: Path, rounds: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--run", method, str(path), "--rounds", str(rounds)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def measure_pool(path: Path, rounds: int) -> dict:
    from service.media.pool import DecoderPool

    pool = DecoderPool(1, 120, 1024**3)
    try:
        await pool.analyse(path)  # the child starts
        started = time.perf_counter()
        for _ in range(rounds):
            await pool.analyse(path)
        seconds = time.perf_counter() - started
        peak = vm_hwm_kib(pool._idle[0].process.pid)
    finally:
        await pool.close()
    return {"per_second": rounds / seconds, "rss_mib": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="directory to make (or reuse) the files in")
    parser.add_argument("--run", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_method(args.run[0], Path(args.run[1]), args.rounds)
        return
    directory = args.keep or Path(tempfile.mkdtemp(prefix="chunkd-bench-media-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        paths = make_files(directory)
        print(
            f"{'case':6} {'file':>9} {'chunkd/s':>9} {'MiB':>6} {'pool/s':>7} {'MiB':>6} "
            f"{'baseline':12} {'/s':>7} {'MiB':>6} {'speed':>6} {'memory':>7}"
        )
        for case, (ours, baseline) in CASES.items():
            path = paths[case]
            if baseline == "ffmpeg_cli" and shutil.which("ffmpeg") is None:
                print(f"{case:6} (no ffmpeg CLI installed: baseline skipped)")
                continue
            mine, theirs = measure(ours, path, args.rounds), measure(baseline, path, args.rounds)
            pooled = asyncio.run(measure_pool(path, args.rounds))
            name = "ffmpeg CLI" if baseline == "ffmpeg_cli" else "naive"
            print(
                f"{case:6} {path.stat().st_size / 2**20:7.1f}MB {mine['per_second']:9.2f} {mine['rss_mib']:6.0f} "
                f"{pooled['per_second']:7.2f} {pooled['rss_mib']:6.0f} {name:12} {theirs['per_second']:7.2f} "
                f"{theirs['rss_mib']:6.0f} {mine['per_second'] / theirs['per_second']:5.2f}x "
                f"{theirs['rss_mib'] / mine['rss_mib']:6.2f}x"
            )
        print("speed: chunkd's thumbnails/s over the baseline's; memory: the baseline's peak RSS over chunkd's")
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
