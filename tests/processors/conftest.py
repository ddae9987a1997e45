"""Input builders for the processor tests: every file is generated here, nothing binary in git."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.testing import RunResult, run_processor

Run = Callable[..., RunResult]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Limits come from the environment: make sure the developer's shell does not leak in.
    for key in (
        "CONVEYOR_MAX_IMAGE_PIXELS",
        "CONVEYOR_ARCHIVE_MAX_ENTRIES",
        "CONVEYOR_ARCHIVE_MAX_BYTES",
        "CONVEYOR_ARCHIVE_MAX_RATIO",
        "CONVEYOR_IMAGE_ENGINE",
    ):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """``run(name, path, options=None, filename=None, **kw)`` with outputs under tmp_path."""
    counter = iter(range(1000))

    def _run(name: str, path: Path, options: Any = None, filename: str | None = None,
             **kw: Any) -> RunResult:
        return run_processor(
            name, path, options, filename, out_dir=tmp_path / f"out{next(counter)}", **kw
        )

    return _run


# -- images -----------------------------------------------------------------------------------
@pytest.fixture(params=["vips", "pillow"])
def image_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per pixel engine of the ``image`` processor."""
    engine: str = request.param
    monkeypatch.setenv("CONVEYOR_IMAGE_ENGINE", engine)
    return engine


def photo(width: int, height: int, mode: str = "RGB") -> Any:
    """A photo-like picture: a gradient with some noise, so encoders have work to do."""
    from PIL import Image

    base = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40)
    rgb = Image.merge("RGB", (base, noise, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    return rgb.convert(mode) if mode != "RGB" else rgb


def save_jpeg(path: Path, width: int, height: int, exif: dict[int, Any] | None = None,
              original: str | None = None) -> Path:
    from PIL import Image

    im = photo(width, height)
    ex = Image.Exif()
    for tag, value in (exif or {}).items():
        ex[tag] = value
    if original:
        ex.get_ifd(0x8769)[0x9003] = original
    im.save(path, format="JPEG", quality=90, exif=ex.tobytes())
    return path


def png_bomb(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels, written without holding it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF
        )

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = bytearray()
    rows_per_chunk = max(1, (1 << 20) // len(row))
    done = 0
    while done < height:
        n = min(rows_per_chunk, height - done)
        idat += comp.compress(row * n)
        done += n
    idat += comp.flush()
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        fh.write(chunk(b"IDAT", bytes(idat)))
        fh.write(chunk(b"IEND", b""))
    return path


# -- PDFs -------------------------------------------------------------------------------------
def raw_pdf(objects: list[bytes], *, trailer: bytes = b"", prev_loop: bool = False) -> bytes:
    """A hand-written PDF: object ``i+1`` is ``objects[i]``; object 1 is the catalog."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    prev = b" /Prev %d" % xref if prev_loop else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s %s>>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, prev, trailer, xref
    )
    return bytes(out)


def stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def one_page_pdf(text: bytes = b"Hello conveyor", catalog_extra: bytes = b"") -> bytes:
    content = b"BT /F1 24 Tf 72 700 Td (" + text + b") Tj ET"
    return raw_pdf([
        b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b">>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        stream(content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ])


def reportlab_pdf(path: Path, pages: list[str], *, encrypt: str | None = None,
                  title: str | None = None) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    kw: dict[str, Any] = {}
    if encrypt:
        from reportlab.lib import pdfencrypt

        kw["encrypt"] = pdfencrypt.StandardEncryption(encrypt, ownerPassword="owner" + encrypt)
    c = canvas.Canvas(str(path), pagesize=A4, **kw)
    if title:
        c.setTitle(title)
        c.setAuthor("conveyor tests")
    for text in pages:
        y = 780
        for line in text.splitlines():
            c.drawString(72, y, line)
            y -= 14
        c.showPage()
    c.save()
    return path


# -- tables -----------------------------------------------------------------------------------
MESSY_CSV = (
    b"\xef\xbb\xbfname;price;qty;note\r\n"
    b"Apple;1,50;3;\"fresh\r\nand red\"\r\n"
    b"Pear;2,25;4;ok\r\n"
    b"Plum;0,75;10;fine\r\n"
    b"Kiwi;3,10;2;x;extra\r\n"
)


def xlsx(path: Path, rows: list[list[Any]], sheet: str = "data") -> Path:
    """A minimal valid XLSX (inline strings), written by hand: no openpyxl needed."""

    def cell(ref: str, value: Any) -> str:
        if isinstance(value, int | float):
            return f'<c r="{ref}"><v>{value}</v></c>'
        return f'<c r="{ref}" t="inlineStr"><is><t>{value}</t></is></c>'

    body = "".join(
        f'<row r="{r}">'
        + "".join(cell(f"{chr(65 + c)}{r}", v) for c, v in enumerate(row))
        + "</row>"
        for r, row in enumerate(rows, 1)
    )
    ns = "http://schemas.openxmlformats.org"
    files = {
        "[Content_Types].xml": (
            f'<?xml version="1.0"?><Types xmlns="{ns}/package/2006/content-types">'
            f'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            f'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
            f'officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/'
            f'sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            f'spreadsheetml.worksheet+xml"/></Types>'
        ),
        "_rels/.rels": (
            f'<?xml version="1.0"?><Relationships xmlns="{ns}/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/'
            f'officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<?xml version="1.0"?><workbook xmlns="{ns}/spreadsheetml/2006/main" '
            f'xmlns:r="{ns}/officeDocument/2006/relationships"><sheets>'
            f'<sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0"?><Relationships xmlns="{ns}/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/worksheet" '
            f'Target="worksheets/sheet1.xml"/></Relationships>'
        ),
        "xl/worksheets/sheet1.xml": (
            f'<?xml version="1.0"?><worksheet xmlns="{ns}/spreadsheetml/2006/main">'
            f"<sheetData>{body}</sheetData></worksheet>"
        ),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


# -- archives ---------------------------------------------------------------------------------
def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tree(root: Path) -> Iterator[Path]:
    return iter(sorted(root.rglob("*")))
