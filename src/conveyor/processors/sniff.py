"""Media-type sniffing from a file's first bytes: filetype's signatures plus small text sniffers.

filetype knows binary formats; it says nothing about JSON, CSV, SVG, HTML or plain text, and
nobody detects Parquet, so those are recognised here. Pure: bytes in, a media type out.
"""

from __future__ import annotations

import csv
import json
import re

import filetype

#: How many leading bytes the sniffers look at.
SNIFF_BYTES = 8192
OCTET_STREAM = "application/octet-stream"

_SVG = re.compile(rb"<svg[\s>]", re.IGNORECASE)
_HTML = re.compile(rb"<(!doctype\s+html|html|head|body|script|iframe)[\s>]", re.IGNORECASE)
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _decode_text(head: bytes) -> str | None:
    """The head as text if it looks like text (UTF-8, BOM-marked UTF-16, or latin-1 prose)."""
    if not head:
        return None
    if head.startswith(b"\xff\xfe") or head.startswith(b"\xfe\xff"):
        try:
            return head.decode("utf-16")[:4096]
        except UnicodeDecodeError:
            return None
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff window's end is still UTF-8.
        if exc.start >= len(head) - 3:
            return head[: exc.start].decode("utf-8-sig")
    controls = sum(1 for b in head if b < 9 or 13 < b < 32)
    if controls > len(head) // 100:
        return None
    return head.decode("latin-1")


def _looks_like_csv(text: str) -> bool:
    lines = [ln for ln in text.splitlines() if ln.strip()][:20]
    if len(lines) < 2:
        return False
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|")
    except csv.Error:
        return False
    counts = [len(row) for row in csv.reader(lines[:-1] or lines, dialect)]
    if not counts or counts[0] < 2:
        return False
    return sum(c == counts[0] for c in counts) >= len(counts) * 0.8


def _looks_like_json(text: str) -> str | None:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        json.loads(stripped)
        return "application/json"
    except ValueError:
        pass
    first = stripped.splitlines()[0]
    try:
        json.loads(first)
    except ValueError:
        # A truncated head of a big JSON document still starts like JSON.
        return "application/json" if len(text.encode()) >= SNIFF_BYTES - 4 else None
    return "application/x-ndjson" if "\n" in stripped else "application/json"


#: Text formats whose bytes may not look like them (a ragged CSV row, one column): when the
#: bytes are plain text, the declared type or the file's extension names the format.
TEXT_FORMATS = ("text/csv", "text/tab-separated-values")
_TEXT_SUFFIXES = {".csv": "text/csv", ".tsv": "text/tab-separated-values",
                  ".tab": "text/tab-separated-values"}


def plain_text_hint(filename: str | None, declared: str | None) -> str | None:
    """The text format a plain-text file declares (its Content-Type, then its extension)."""
    kind = (declared or "").split(";")[0].strip().lower()
    if kind in TEXT_FORMATS:
        return kind
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
    return _TEXT_SUFFIXES.get(suffix)


def sniff(head: bytes, filename: str | None = None, declared: str | None = None) -> str:
    """The media type of a file whose first bytes are ``head``.

    The bytes decide; only when they are plain text does ``declared`` (the client's
    Content-Type) or the name's extension refine it to a text format such as CSV.
    """
    if not head:
        return "application/x-empty"
    if head.startswith(b"PAR1"):
        return "application/vnd.apache.parquet"
    kind = filetype.guess(head)
    if kind is not None:
        mime: str = kind.mime
        if mime == "application/zip" and filename:
            lower = filename.lower()
            if lower.endswith(".xlsx"):
                return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        return mime
    text = _decode_text(head)
    if text is None:
        return OCTET_STREAM
    body = text.lstrip()
    if body.startswith("%PDF"):
        return "application/pdf"
    if _SVG.search(head[:2048]) and body.startswith(("<?xml", "<svg", "<!--", "<!DOCTYPE svg")):
        return "image/svg+xml"
    if _HTML.search(head[:2048]):
        return "text/html"
    as_json = _looks_like_json(text)
    if as_json:
        return as_json
    if body.startswith("<?xml"):
        return "application/xml"
    if _looks_like_csv(text):
        tabs = text.count("\t")
        if tabs > text.count(",") and tabs > text.count(";"):
            return "text/tab-separated-values"
        return "text/csv"
    return plain_text_hint(filename, declared) or "text/plain"


def read_head(path: str | bytes, n: int = SNIFF_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)
