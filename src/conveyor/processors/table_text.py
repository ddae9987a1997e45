"""Delimited text before DuckDB sees it: its encoding and its dialect (delimiter, quote, header,
decimal comma), detected here because DuckDB's own sniffer is not trusted alone.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

SAMPLE_BYTES = 64 * 1024
#: Bytes checked for UTF-8 before DuckDB reads a file (DuckDB itself checks the rest).
ENCODING_SAMPLE_BYTES = 1 << 20
_DECIMAL_COMMA = re.compile(r"^[-+]?\d{1,3}(\.\d{3})*,\d+$|^[-+]?\d+,\d+$")
_DECIMAL_DOT = re.compile(r"^[-+]?\d+\.\d+$")


@dataclass(frozen=True, slots=True)
class Dialect:
    """A CSV dialect, as passed to DuckDB."""

    delimiter: str
    quote: str
    escape: str
    header: bool
    decimal_separator: str = "."


def detect_encoding(path: Path, chunk: int = 4 << 20, limit: int | None = None) -> str:
    """``utf-8``, ``utf-8-sig``, ``utf-16`` (BOM) or, when not valid UTF-8, ``cp1252``/``latin-1``.

    The whole file is checked (incrementally): a file whose first non-ASCII byte is in its
    last line is still latin-1. With ``limit``, only the first ``limit`` bytes are checked
    for UTF-8 (a character cut at the limit counts as valid): the answer ``utf-8`` is then a
    guess the caller confirms (DuckDB reports the lines it cannot decode); any other answer
    comes from the whole file.
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            return "utf-16"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        saw_cp1252_only = False
        try:
            left = limit
            while data := fh.read(chunk if left is None else min(chunk, left)):
                decoder.decode(data)
                if left is not None:
                    left -= len(data)
                    if left <= 0:
                        break
            else:
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            fh.seek(0)
            cp = codecs.getincrementaldecoder("cp1252")()
            try:
                while data := fh.read(chunk):
                    cp.decode(data)
                saw_cp1252_only = True
            except UnicodeDecodeError:
                return "latin-1"
        if saw_cp1252_only:
            return "cp1252"
    return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"


def transcode_to_utf8(src: Path, encoding: str, dst: Path, chunk: int = 4 << 20) -> None:
    """Stream ``src`` from ``encoding`` to UTF-8 (no BOM) at ``dst``."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        first = True
        while data := fin.read(chunk):
            text = decoder.decode(data)
            if first:
                text = text.lstrip("\ufeff")
                first = False
            fout.write(text.encode("utf-8"))
        fout.write(decoder.decode(b"", final=True).encode("utf-8"))


def read_sample(path: Path, size: int = SAMPLE_BYTES) -> str:
    """The first ``size`` bytes of a UTF-8 file as text, cut at the last complete line."""
    with open(path, "rb") as fh:
        raw = fh.read(size)
        more = bool(fh.read(1))
    text = raw.decode("utf-8-sig", errors="ignore")
    if more and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    return text


def sniff_dialect(sample: str, default_delimiter: str = ",") -> Dialect:
    """Detect delimiter, quote, header and decimal separator from a text sample (pure)."""
    # csv.Sniffer gives up on CRLF samples with quoted newlines: give it plain LF.
    sample = sample.replace("\r\n", "\n").replace("\r", "\n")
    if not sample.strip():
        return Dialect(default_delimiter, '"', '"', False)
    sniffer = csv.Sniffer()
    try:
        found = sniffer.sniff(sample, delimiters=",;\t|")
        delimiter, quote = found.delimiter, found.quotechar or '"'
        escape = found.escapechar or quote
    except csv.Error:
        delimiter, quote, escape = _consistent_delimiter(sample, default_delimiter), '"', '"'
    rows = list(csv.reader(io.StringIO(sample), delimiter=delimiter, quotechar=quote))[:50]
    rows = [r for r in rows if r]
    try:
        header = sniffer.has_header(sample)
    except csv.Error:
        header = False
    if not header and len(rows) > 1:
        # has_header votes on column types and says no when every column is text. A first row
        # of distinct, non-empty, non-numeric names is a header in practice (the ``header``
        # option overrides; the choice is reported in the result).
        first = [c.strip() for c in rows[0]]
        header = all(c and not _numberish(c) for c in first) and len(set(first)) == len(first)
    decimal = "."
    if delimiter != ",":
        cells = [c.strip() for row in rows[1 if header else 0 :] for c in row]
        commas = sum(1 for c in cells if _DECIMAL_COMMA.match(c))
        dots = sum(1 for c in cells if _DECIMAL_DOT.match(c))
        if commas > dots:
            decimal = ","
    return Dialect(delimiter, quote, escape, header, decimal)


def _consistent_delimiter(sample: str, default: str) -> str:
    """The candidate whose parsed rows most often share one width above 1."""
    best, best_score = default, (0.0, 0)
    for cand in ",;\t|":
        widths = [len(r) for r in csv.reader(io.StringIO(sample), delimiter=cand) if r][:200]
        if not widths:
            continue
        mode = max(set(widths), key=widths.count)
        score = (widths.count(mode) / len(widths), mode)
        if mode > 1 and score > best_score:
            best, best_score = cand, score
    return best


def _numberish(cell: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d.,]+(e[-+]?\d+)?", cell, re.IGNORECASE))
