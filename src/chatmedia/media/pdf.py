"""Describing PDFs with PDFium (pypdfium2): page count, the first page's size in points,
and that page rendered into previews and a BlurHash. Runs only inside a sandboxed media
process.

The page is rendered once, at the scale that fits the largest preview box (and never more
than `max_pixels`), so a poster-sized page costs no more than a letter-sized one. Forms
and JavaScript are not run: the builds of PDFium pypdfium2 ships have no JavaScript engine,
and forms are never initialised.
"""

from __future__ import annotations

import math
from typing import Any

import pypdfium2 as pdfium
from PIL import Image

from chatmedia.media.stills import (
    Corrupt,
    Unsupported,
    blurhash,
    displayable,
    fit,
    parse_sizes,
    previews,
)


def describe_pdf(
    path: str, content_type: str = "", max_pixels: int = 32_000_000, sizes: str = "320,800"
) -> dict[str, Any]:
    """Pages, the first page's width and height in points (1/72 inch, as displayed:
    after the page's own rotation), BlurHash and previews of the PDF at `path`.
    `content_type` is the option every task takes, unused here."""
    del content_type
    boxes = parse_sizes(sizes)
    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as e:
        if "password" in str(e).lower():
            raise Unsupported("the PDF is encrypted") from None
        raise Corrupt(f"not a PDF PDFium reads: {e}") from None
    try:
        pages = len(document)
        if pages == 0:
            raise Corrupt("the PDF has no page")
        picture, width, height = _first_page(document, boxes[-1], max_pixels)
    except pdfium.PdfiumError as e:
        raise Corrupt(f"the first page cannot be rendered: {e}") from None
    finally:
        document.close()
    shown = displayable(picture, picture.size)
    return {
        "pages": pages,
        "width": round(width),
        "height": round(height),
        "blurhash": blurhash(shown),
        "previews": previews(shown, boxes),
    }


def _first_page(document: Any, box: int, max_pixels: int) -> tuple[Image.Image, float, float]:
    """The first page rendered to fit `box` (white behind it), and its size in points."""
    page = document[0]
    try:
        width, height = page.get_size()
        if not (width > 0 and height > 0):
            raise Corrupt(f"the first page measures {width}x{height} points")
        target = fit(math.ceil(width), math.ceil(height), box)
        scale = min(target[0] / width, target[1] / height, math.sqrt(max_pixels / (width * height)))
        bitmap = page.render(scale=scale, draw_annots=True, may_draw_forms=False)
        picture: Image.Image = bitmap.to_pil().copy()  # not backed by PDFium memory
        return picture, width, height
    finally:
        page.close()
