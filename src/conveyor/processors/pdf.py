"""The ``pdf`` processor: text per page, page previews, metadata and active-content flags.

pypdfium2 (PDFium) extracts text about 10x faster than pypdf and renders pages. PDFium is not
thread-safe, not even across documents: this runs in a worker process, one document at a time.

Active content (JavaScript, OpenAction, embedded files, Launch, XFA, ...) is flagged, never run:
a bounded scan of the raw bytes for the PDF names (``#xx`` escapes decoded), plus PDFium's own
counts of document JavaScript and attachments, which also sees inside compressed object streams.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import ProcessorError
from conveyor.processors.base import Context, define

#: Bytes of the file scanned for active-content names.
SCAN_BYTES = 64 * 1024 * 1024
_SCAN_CHUNK = 4 * 1024 * 1024
#: Longest edge of a rendered preview, whatever the page size claims.
MAX_PREVIEW_EDGE = 4096
_FPDF_ERR_PASSWORD = 4
_FPDF_ERR_SECURITY = 6

#: Flag -> the PDF names that set it.
ACTIVE_NAMES: dict[str, tuple[bytes, ...]] = {
    "javascript": (b"JavaScript", b"JS"),
    "open_action": (b"OpenAction",),
    "additional_actions": (b"AA",),
    "embedded_files": (b"EmbeddedFile", b"EmbeddedFiles"),
    "launch": (b"Launch",),
    "xfa": (b"XFA",),
    "submit_form": (b"SubmitForm",),
    "import_data": (b"ImportData",),
    "goto_remote": (b"GoToR", b"GoToE"),
}
_NAME_TO_FLAG: dict[bytes, str] = {
    name: flag for flag, names in ACTIVE_NAMES.items() for name in names
}
# A PDF name ends at whitespace or a delimiter; ``#`` starts a hex escape (/J#61vaScript).
_NAME = re.compile(rb"/((?:[A-Za-z0-9_.+-]|#[0-9A-Fa-f]{2}){1,40})(?=[\s/<>\[\]()%{}]|$)")
_LONGEST_FIRST: list[bytes] = sorted(_NAME_TO_FLAG, key=len, reverse=True)
_LITERAL = re.compile(rb"/(" + b"|".join(_LONGEST_FIRST) + rb")(?=[\s/<>\[\]()%{}]|$)")


class PdfOptions(BaseModel):
    """Options of the ``pdf`` processor."""

    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(default=None, max_length=1024)
    previews: int = Field(default=1, ge=0, le=50, description="Render the first N pages.")
    scale: float = Field(default=1.0, gt=0, le=4.0, description="1.0 = 72 dpi.")
    preview_format: Literal["webp", "png"] = "webp"
    max_pages: int = Field(default=5000, ge=1, le=100_000, description="Text of at most N pages.")


def scan_active_content(data: bytes) -> set[str]:
    """Flags for the active-content names in a chunk of raw PDF bytes (pure)."""
    flags = {_NAME_TO_FLAG[m.group(1)] for m in _LITERAL.finditer(data)}
    if b"#" in data:
        for m in _NAME.finditer(data):
            raw = m.group(1)
            if b"#" in raw:
                name = re.sub(rb"#([0-9A-Fa-f]{2})", lambda h: bytes([int(h.group(1), 16)]), raw)
                if name in _NAME_TO_FLAG:
                    flags.add(_NAME_TO_FLAG[name])
    return flags


def _scan_file(path: Path) -> set[str]:
    flags: set[str] = set()
    overlap = b""
    read = 0
    with open(path, "rb") as fh:
        while read < SCAN_BYTES and (chunk := fh.read(_SCAN_CHUNK)):
            read += len(chunk)
            flags |= scan_active_content(overlap + chunk)
            overlap = chunk[-64:]  # a name cut at a chunk boundary
    return flags


@define(
    "pdf",
    options=PdfOptions,
    description="PDF text per page, page previews, metadata and active-content flags",
    accepts=["application/pdf"],
)
def pdf(ctx: Context) -> dict[str, Any]:
    """Extract text to ``text.txt`` and ``pages.json``, render previews, flag active content."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    opts: PdfOptions = ctx.options
    if ctx.input_path.stat().st_size == 0:
        raise ProcessorError("empty_file", "the file is empty")
    flags = _scan_file(ctx.input_path)
    try:
        doc = pdfium.PdfDocument(ctx.input_path, password=opts.password)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code in (_FPDF_ERR_PASSWORD, _FPDF_ERR_SECURITY):
            detail = "wrong password" if opts.password else "no password given"
            raise ProcessorError("encrypted", f"the PDF is encrypted ({detail})") from None
        raise ProcessorError("corrupt_file", f"cannot open the PDF: {exc}") from None
    try:
        encrypted = pdfium_c.FPDF_GetSecurityHandlerRevision(doc.raw) != -1
        if pdfium_c.FPDFDoc_GetJavaScriptActionCount(doc.raw) > 0:
            flags.add("javascript")
        if pdfium_c.FPDFDoc_GetAttachmentCount(doc.raw) > 0:
            flags.add("embedded_files")
        pages = len(doc)
        metadata = dict(doc.get_metadata_dict(skip_empty=True))
        text_pages = min(pages, opts.max_pages)
        previews = _extract(ctx, doc, text_pages, min(pages, opts.previews), opts)
    finally:
        doc.close()
    ctx.progress(1.0, "done")
    return {
        "pages": pages,
        "text_pages": text_pages,
        "metadata": metadata,
        "encrypted": encrypted,
        "active_content": {flag: flag in flags for flag in ACTIVE_NAMES},
        "previews": previews,
    }


def _extract(
    ctx: Context, doc: Any, text_pages: int, preview_pages: int, opts: PdfOptions
) -> list[dict[str, Any]]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    per_page: list[dict[str, Any]] = []
    previews: list[dict[str, Any]] = []
    total = max(text_pages, preview_pages)
    text_path = ctx.work_dir / "text.txt"
    with open(text_path, "w", encoding="utf-8") as text_out:
        for i in range(total):
            if ctx.cancelled():
                raise ProcessorError("cancelled", "the job was cancelled")
            if i < text_pages:
                # The raw API: pypdfium2's page and text-page objects (finalizers, trackers)
                # cost more per page than PDFium's own page load.
                raw_page = pdfium_c.FPDF_LoadPage(doc.raw, i)
                if not raw_page:
                    raise ProcessorError("corrupt_file", f"page {i + 1}: cannot load the page")
                try:
                    text = page_text(raw_page)
                finally:
                    pdfium_c.FPDF_ClosePage(raw_page)
                text = text.replace("\r\n", "\n")
                if i:
                    text_out.write("\f")  # form feed between pages, as pdftotext does
                text_out.write(text)
                per_page.append({"page": i + 1, "chars": len(text), "text": text})
            if i < preview_pages:
                try:
                    page = doc[i]
                except pdfium.PdfiumError as exc:
                    raise ProcessorError("corrupt_file", f"page {i + 1}: {exc}") from None
                try:
                    previews.append(_render(ctx, page, i + 1, opts))
                finally:
                    page.close()
            ctx.progress(0.95 * (i + 1) / max(total, 1), f"page {i + 1}/{total}")
    ctx.artifact_from_path("text.txt", "text/plain; charset=utf-8", text_path)
    with ctx.artifact("pages.json", "application/json") as fh:
        fh.write(json.dumps(per_page, ensure_ascii=False).encode("utf-8"))
    return previews


def page_text(raw_page: Any) -> str:
    """The text of a raw PDFium page, as pypdfium2's ``get_text_range()`` gives it.

    PDFium may leave chars at either end out of the text (crbug.com/pdfium/2079): the range
    is narrowed to the first and last char that are in it, and the buffer sized from their
    text indices, as pypdfium2 does.
    """
    import ctypes

    import pypdfium2.raw as pdfium_c

    textpage = pdfium_c.FPDFText_LoadPage(raw_page)
    if not textpage:
        raise ProcessorError("corrupt_file", "cannot load the text of a page")
    try:
        index = pdfium_c.FPDFText_GetTextIndexFromCharIndex
        first, last = 0, pdfium_c.FPDFText_CountChars(textpage) - 1
        while first <= last and index(textpage, first) == -1:
            first += 1
        while last >= first and index(textpage, last) == -1:
            last -= 1
        if first > last:
            return ""
        size = index(textpage, last) + 2 - index(textpage, first)  # with the NUL
        buffer = (ctypes.c_ushort * size)()
        written = pdfium_c.FPDFText_GetText(textpage, first, last - first + 1, buffer)
        if not 0 < written <= size:
            raise ProcessorError("corrupt_file", "cannot read the text of a page")
        return bytes(memoryview(buffer)[: written - 1]).decode("utf-16-le", errors="ignore")
    finally:
        pdfium_c.FPDFText_ClosePage(textpage)


def _render(ctx: Context, page: Any, number: int, opts: PdfOptions) -> dict[str, Any]:
    width, height = page.get_size()
    # A page may claim any size: bound the bitmap, not just the scale.
    scale = min(opts.scale, MAX_PREVIEW_EDGE / max(width, height, 1.0))
    image = page.render(scale=scale).to_pil()
    name = f"page-{number}.{opts.preview_format}"
    tmp = ctx.work_dir / name
    if opts.preview_format == "webp":
        image.save(tmp, format="WEBP", quality=80)
    else:
        image.save(tmp, format="PNG")
    ctx.artifact_from_path(name, f"image/{opts.preview_format}", tmp)
    return {"page": number, "name": name, "width": image.width, "height": image.height}
