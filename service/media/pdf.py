"""PDF: PDFium (pypdfium2) counts the pages, reads the title and author, renders the first page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from service.media.result import Found, Unreadable, decode_failed
from service.media.thumbnail import THUMBNAIL_SIDE

MAX_TEXT = 500  # characters kept of a title or an author


def analyse(path: Path, mimetype: str) -> Found:
    """An encrypted PDF completes with `encrypted: true` and no thumbnail: nothing of it is rendered,
    and when it needs a password to open nothing else is known either."""
    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as e:
        if e.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            return Found({"encrypted": True})
        raise Unreadable(f"unreadable PDF: {pdfium_error(e)}") from None
    try:
        encrypted = pdfium_c.FPDF_GetSecurityHandlerRevision(document.raw) != -1
        info = document.get_metadata_dict(skip_empty=True)
        metadata: dict[str, Any] = {"page_count": len(document), "encrypted": encrypted}
        for key, name in (("title", "Title"), ("author", "Author")):
            text = "".join(c for c in info.get(name, "") if c.isprintable()).strip()[:MAX_TEXT]
            if text:
                metadata[key] = text
        if encrypted or not len(document):
            return Found(metadata)
        return Found(metadata, first_page(document))
    except pdfium.PdfiumError as e:
        raise Unreadable(f"unreadable PDF: {pdfium_error(e)}") from None
    except (ValueError, OSError) as e:
        raise decode_failed("PDF", path, e) from None
    finally:
        document.close()


def first_page(document: pdfium.PdfDocument) -> Any:
    """Rendered straight at thumbnail size, whatever size the page claims."""
    page = document[0]
    try:
        width, height = page.get_size()
        if not (width > 0 and height > 0):
            return None
        bitmap = page.render(scale=THUMBNAIL_SIDE / max(width, height))
        return bitmap.to_pil().copy()  # the bitmap's buffer goes with the page
    finally:
        page.close()


def pdfium_error(e: pdfium.PdfiumError) -> str:
    return str(e).removeprefix("Failed to load document ").strip("(). ") or "PDFium refused it"
