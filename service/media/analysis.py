"""The one entry point of media analysis: sniff, classify, run the analyser of the kind, make the
thumbnail. It decodes hostile bytes, so it runs only in the children of pool.py (child.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from service.media import audio, image, pdf, thumbnail, video
from service.media.result import Analysis, Found
from service.media.sniff import detect_mimetype
from service.media.types import classify
from service.models import FileType

Analyser = Callable[[Path, str], Found]
BY_KIND: dict[FileType, Analyser] = {
    FileType.IMAGE: image.analyse,
    FileType.VIDEO: video.analyse,
    FileType.AUDIO: audio.analyse,
}
BY_MIMETYPE: dict[str, Analyser] = {"application/pdf": pdf.analyse}


def analyse(path: Path) -> Analysis:
    """Raises Unreadable when the bytes are at fault; OSError when reading them failed."""
    mimetype = detect_mimetype(path)
    kind = classify(mimetype)
    analyser = BY_MIMETYPE.get(mimetype) or BY_KIND.get(kind)
    if analyser is None:
        return Analysis(mimetype, kind, {"mimetype": mimetype})
    found = analyser(path, mimetype)
    metadata = {"mimetype": mimetype, **found.metadata}
    thumb = thumbnail.encode(found.picture) if found.picture is not None else None
    if thumb is not None:
        metadata["thumbnail"] = thumb.describe()
    return Analysis(mimetype, found.kind or kind, metadata, thumb)
