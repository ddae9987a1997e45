from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conveyor.errors import ProcessorError
from conveyor.processors.pdf import scan_active_content

from .conftest import Run, one_page_pdf, reportlab_pdf


def test_text_pages_previews_and_progress(run: Run, tmp_path: Path) -> None:
    src = reportlab_pdf(tmp_path / "doc.pdf", ["first page\nsecond line", "page two", "three"],
                        title="Report")
    out = run("pdf", src)
    res = out.result
    assert res["pages"] == 3 and res["encrypted"] is False
    assert res["metadata"]["Title"] == "Report" and res["metadata"]["Author"] == "conveyor tests"
    assert not any(res["active_content"].values())
    text = out.artifacts["text.txt"].read_text()
    assert text.split("\f")[1].strip() == "page two"
    assert "second line" in text.split("\f")[0]
    pages = json.loads(out.artifacts["pages.json"].read_text())
    assert [p["page"] for p in pages] == [1, 2, 3]
    assert pages[2] == {"page": 3, "chars": len(pages[2]["text"]), "text": pages[2]["text"]}
    assert "three" in pages[2]["text"]
    assert sorted(out.artifacts) == ["page-1.webp", "pages.json", "text.txt"]
    with Image.open(out.artifacts["page-1.webp"]) as im:
        assert im.format == "WEBP" and im.size in ((595, 842), (596, 842))  # A4, 72 dpi
    page_msgs = [m for _, m in out.progress if m and m.startswith("page")]
    assert page_msgs == ["page 1/3", "page 2/3", "page 3/3"]


def test_preview_options_and_max_pages(run: Run, tmp_path: Path) -> None:
    src = reportlab_pdf(tmp_path / "doc.pdf", ["a", "b", "c"])
    out = run("pdf", src, {"previews": 2, "scale": 0.5, "preview_format": "png", "max_pages": 1})
    assert out.result["text_pages"] == 1
    assert len(json.loads(out.artifacts["pages.json"].read_text())) == 1
    with Image.open(out.artifacts["page-2.png"]) as im:
        assert im.format == "PNG" and im.width in (297, 298)


def test_encrypted_needs_the_password(run: Run, tmp_path: Path) -> None:
    src = reportlab_pdf(tmp_path / "secret.pdf", ["top secret"], encrypt="s3cret")
    with pytest.raises(ProcessorError) as err:
        run("pdf", src)
    assert err.value.code == "encrypted" and not err.value.retryable
    with pytest.raises(ProcessorError) as err:
        run("pdf", src, {"password": "wrong"})
    assert err.value.code == "encrypted"
    out = run("pdf", src, {"password": "s3cret"})
    assert out.result["encrypted"] is True
    assert "top secret" in out.artifacts["text.txt"].read_text()


def test_hand_written_pdf(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "h.pdf"
    src.write_bytes(one_page_pdf())
    out = run("pdf", src, {"previews": 0})
    assert out.result["pages"] == 1
    assert out.artifacts["text.txt"].read_text() == "Hello conveyor"


def test_not_a_pdf_is_corrupt(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "x.pdf"
    src.write_bytes(b"%PDF-1.7\nthis is not really a pdf\n")
    with pytest.raises(ProcessorError) as err:
        run("pdf", src)
    assert err.value.code == "corrupt_file"


@pytest.mark.parametrize(
    ("data", "flags"),
    [
        (b"<< /OpenAction << /S /JavaScript /JS (x) >> >>", {"javascript", "open_action"}),
        (b"<< /S /J#61vaScript >>", {"javascript"}),
        (b"<< /Type /EmbeddedFile >>", {"embedded_files"}),
        (b"<< /S /Launch /F (cmd.exe) >>", {"launch"}),
        (b"<< /AcroForm << /XFA 5 0 R >> >>", {"xfa"}),
        (b"<< /AA << /O 3 0 R >> >>", {"additional_actions"}),
        (b"<< /JSFont /JavaScripty /Font >>", set()),
        (b"plain text JavaScript OpenAction", set()),
    ],
)
def test_scan_active_content(data: bytes, flags: set[str]) -> None:
    assert scan_active_content(data) == flags


def test_page_text_matches_pypdfium2(tmp_path: Path) -> None:
    """The raw-API text loop gives what pypdfium2's get_text_range() gives, page by page."""
    import pypdfium2 as pdfium

    from conveyor.processors.pdf import page_text

    src = reportlab_pdf(tmp_path / "t.pdf", ["first page\nsecond line", "", "  x  \n\nlast"])
    doc = pdfium.PdfDocument(src)
    try:
        for i in range(len(doc)):
            page = doc[i]
            textpage = page.get_textpage()
            assert page_text(page.raw) == textpage.get_text_range()
            textpage.close()
            page.close()
    finally:
        doc.close()
