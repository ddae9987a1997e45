"""Hostile and broken files: each one must end with a stable code (or succeed), fast and bounded.

The bombs run in a spawned process with RLIMIT_AS at 1.5 GiB (``run_isolated``), so a check
that failed would show up as ``MemoryError``/``crashed`` rather than exhaust the machine.
"""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from conveyor.errors import ProcessorError
from conveyor.testing import run_isolated
from tests.conftest import need_module

from .conftest import MESSY_CSV, Run, make_zip, png_bomb, raw_pdf, save_jpeg, stream


def code_of(run: Run, *args: object, **kw: object) -> str:
    with pytest.raises(ProcessorError) as err:
        run(*args, **kw)
    assert err.value.retryable is False
    return err.value.code


# -- images -----------------------------------------------------------------------------------
def test_png_bomb_is_refused_before_decoding(tmp_path: Path, image_engine: str) -> None:
    src = png_bomb(tmp_path / "bomb.png")  # 40000 x 40000 = 1.6 gigapixels
    started = time.monotonic()
    outcome = run_isolated("image", src, out_dir=tmp_path / "out")
    assert outcome.code == "decompression_bomb", outcome
    assert time.monotonic() - started < 30


def test_truncated_jpeg_is_corrupt(run: Run, tmp_path: Path, image_engine: str) -> None:
    full = save_jpeg(tmp_path / "full.jpg", 800, 600).read_bytes()
    src = tmp_path / "cut.jpg"
    src.write_bytes(full[: len(full) // 2])
    assert code_of(run, "image", src) == "corrupt_file"


def test_eps_renamed_png_is_refused(run: Run, tmp_path: Path, image_engine: str) -> None:
    src = tmp_path / "evil.png"
    src.write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
        b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
    )
    with Image.open(src) as im:  # Pillow alone would hand it to its EPS (Ghostscript) plugin
        assert im.format == "EPS"
    assert code_of(run, "image", src) == "unsupported_format"


def test_fits_renamed_png_is_refused(run: Run, tmp_path: Path, image_engine: str) -> None:
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8",
             "NAXIS   =                    2", "NAXIS1  =                    4",
             "NAXIS2  =                    4", "END"]
    header = b"".join(c.ljust(80).encode() for c in cards).ljust(2880, b" ")
    src = tmp_path / "evil.png"
    src.write_bytes(header + bytes(16).ljust(2880, b"\0"))
    with Image.open(src) as im:
        assert im.format == "FITS"
    assert code_of(run, "image", src) == "unsupported_format"


# -- archives ---------------------------------------------------------------------------------
def test_zip_of_one_gib_of_zeros(tmp_path: Path) -> None:
    src = tmp_path / "zeros.zip"
    chunk = bytes(1 << 20)
    info = zipfile.ZipInfo("zeros.bin")
    info.compress_type = zipfile.ZIP_DEFLATED
    # Streamed 1 MiB at a time: the test never holds the gibibyte either.
    with zipfile.ZipFile(src, "w") as zf, zf.open(info, "w", force_zip64=True) as fh:
        for _ in range(1024):
            fh.write(chunk)
    assert src.stat().st_size < 20 << 20
    outcome = run_isolated("archive", src, out_dir=tmp_path / "out")
    assert outcome.code in ("ratio_exceeded", "too_large"), outcome


def test_zip_with_100k_entries(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "many.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_STORED) as zf:
        for i in range(100_000):
            zf.writestr(zipfile.ZipInfo(str(i)), b"")
    assert code_of(run, "archive", src) == "too_many_entries"


def test_overlapping_zip_entries(run: Run, tmp_path: Path) -> None:
    good = make_zip(tmp_path / "g.zip", {"a.txt": b"A" * 1000, "b.txt": b"B" * 1000})
    data = bytearray(good.read_bytes())
    # Point the second central-directory entry at the first local header (quoted overlap).
    second = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    data[second + 42 : second + 46] = (0).to_bytes(4, "little")
    src = tmp_path / "overlap.zip"
    src.write_bytes(bytes(data))
    assert code_of(run, "archive", src) == "overlapping_entries"


@pytest.mark.parametrize("evil", ["../x", "/abs", "..\\x", "a/../../x", "C:/x"])
def test_zip_traversal_refuses_the_whole_archive(run: Run, tmp_path: Path, evil: str) -> None:
    src = make_zip(tmp_path / "slip.zip", {"fine.txt": b"ok", evil: b"pwned"})
    assert code_of(run, "archive", src) == "unsafe_path"
    assert not (tmp_path / "x").exists() and not Path("/abs").exists()


@pytest.mark.parametrize(
    ("kind", "linkname"),
    [(tarfile.SYMTYPE, "/etc"), (tarfile.LNKTYPE, "../outside"), (tarfile.CHRTYPE, ""),
     (tarfile.BLKTYPE, ""), (tarfile.FIFOTYPE, "")],
)
def test_tar_links_and_devices(run: Run, tmp_path: Path, kind: bytes, linkname: str) -> None:
    src = tmp_path / "evil.tar.gz"
    with tarfile.open(src, "w:gz") as tf:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        bad = tarfile.TarInfo("link")
        bad.type, bad.linkname = kind, linkname
        tf.addfile(bad)
        after = tarfile.TarInfo("link/passwd")
        after.size = 1
        tf.addfile(after, io.BytesIO(b"x"))
    assert code_of(run, "archive", src) == "unsafe_member"


def test_zip_symlink_member(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "ln.zip"
    with zipfile.ZipFile(src, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    assert code_of(run, "archive", src) == "unsafe_member"


def test_tar_gz_bomb(tmp_path: Path) -> None:
    src = tmp_path / "bomb.tar.gz"
    size = 512 << 20
    with tarfile.open(src, "w:gz", compresslevel=1) as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size

        class Zeros(io.RawIOBase):
            left = size

            def readinto(self, b: bytearray) -> int:  # type: ignore[override]
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        tf.addfile(info, Zeros())
    outcome = run_isolated("archive", src, out_dir=tmp_path / "out")
    assert outcome.code == "ratio_exceeded", outcome


def test_zip_nested_five_deep_stops_at_depth_three(run: Run, tmp_path: Path) -> None:
    from .conftest import zip_bytes

    data = b"leaf"
    for level in range(5):
        data = zip_bytes({f"l{level}.zip" if level else "leaf.txt": data})
    src = tmp_path / "nested.zip"
    src.write_bytes(data)
    assert run("archive", src, {"depth": 2}).result["extracted"] == 1
    assert code_of(run, "archive", src, {"depth": 3}) == "nesting_too_deep"


# -- PDFs -------------------------------------------------------------------------------------
def test_pdf_nested_flate_over_zeros(tmp_path: Path) -> None:
    comp = zlib.compressobj(9)
    once = b"".join(comp.compress(bytes(1 << 20)) for _ in range(256)) + comp.flush()
    data = zlib.compress(zlib.compress(once, 9), 9)  # three FlateDecode layers, 256 MiB inside
    src = tmp_path / "flate.pdf"
    src.write_bytes(raw_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
        stream(data, b"/Filter [/FlateDecode /FlateDecode /FlateDecode] "),
    ]))
    outcome = run_isolated("pdf", src, out_dir=tmp_path / "out")
    assert outcome.ok or outcome.code == "corrupt_file", outcome


def test_pdf_javascript_open_action_is_flagged(run: Run, tmp_path: Path) -> None:
    from .conftest import one_page_pdf

    src = tmp_path / "js.pdf"
    src.write_bytes(one_page_pdf(
        catalog_extra=b"/OpenAction << /S /JavaScript /JS (app.alert\\(1\\)) >> "
    ))
    out = run("pdf", src)
    flags = out.result["active_content"]
    assert flags["javascript"] and flags["open_action"]
    assert not flags["launch"] and not flags["embedded_files"]


@pytest.mark.parametrize("variant", ["kids_loop", "prev_loop"])
def test_pdf_loops_end(tmp_path: Path, variant: str) -> None:
    src = tmp_path / "loop.pdf"
    if variant == "kids_loop":  # the page tree contains itself
        body = raw_pdf([
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] >>",
        ])
    else:  # the trailer's /Prev points at its own xref section
        body = raw_pdf([
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] >>",
        ], prev_loop=True)
    src.write_bytes(body)
    outcome = run_isolated("pdf", src, out_dir=tmp_path / "out", timeout=60)
    assert outcome.ok or outcome.code == "corrupt_file", outcome


# -- tables -----------------------------------------------------------------------------------
def test_messy_csv_never_drops_rows_silently(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "messy.csv"
    src.write_bytes(MESSY_CSV)
    out = run("table", src)
    assert out.result["rows"] + out.result["rejected"] == 4
    assert out.result["rejected"] == 1 and "rejects.csv" in out.artifacts


def test_latin1_csv_keeps_accents(run: Run, tmp_path: Path) -> None:
    import duckdb

    src = tmp_path / "latin.csv"
    src.write_bytes("name;city\nJosé;Besançon\n".encode("latin-1"))
    out = run("table", src)
    parquet = out.artifacts["data.parquet"]
    assert duckdb.sql(f"SELECT * FROM read_parquet('{parquet}')").fetchall() == [
        ("José", "Besançon")
    ]


# -- empty files ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "filename"),
    [("image", "e.png"), ("pdf", "e.pdf"), ("table", "e.csv"), ("archive", "e.zip"),
     ("media", "e.mp4")],
)
def test_empty_file(run: Run, tmp_path: Path, name: str, filename: str) -> None:
    if name == "media":
        need_module("av", "the media processor decodes with PyAV")
    src = tmp_path / filename
    src.write_bytes(b"")
    assert code_of(run, name, src) == "empty_file"
