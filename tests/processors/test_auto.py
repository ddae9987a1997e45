from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.processors import BadOptions, build_registry
from conveyor.processors.auto import route
from conveyor.testing import run_processor

from .conftest import MESSY_CSV, Run, make_zip, one_page_pdf, save_jpeg, zip_bytes

ALL = {"image", "pdf", "table", "archive", "media", "probe"}


@pytest.mark.parametrize(
    ("media", "name"),
    [
        ("image/jpeg", "image"), ("image/heic", "image"), ("image/svg+xml", "probe"),
        ("application/pdf", "pdf"), ("text/csv", "table"), ("application/x-ndjson", "table"),
        ("application/zip", "archive"), ("application/gzip", "archive"),
        ("video/mp4", "media"), ("audio/mpeg", "media"), ("text/plain", "probe"),
        ("application/octet-stream", "probe"),
    ],
)
def test_route(media: str, name: str) -> None:
    assert route(media, ALL) == name


def test_route_without_media_falls_back_to_probe() -> None:
    assert route("video/mp4", ALL - {"media"}) == "probe"


def test_routes_and_passes_family_options(run: Run, tmp_path: Path) -> None:
    img = save_jpeg(tmp_path / "p.jpg", 200, 100)
    out = run("auto", img, {"image": {"sizes": [64], "format": "png"}, "pdf": {"previews": 0}})
    assert out.result["routed_to"] == "image" and out.result["width"] == 200
    assert sorted(out.artifacts) == ["w64.png"]

    pdf = tmp_path / "d.pdf"
    pdf.write_bytes(one_page_pdf())
    out = run("auto", pdf, {"pdf": {"previews": 0}})
    assert out.result["routed_to"] == "pdf" and sorted(out.artifacts) == ["pages.json", "text.txt"]

    csv = tmp_path / "m.csv"
    csv.write_bytes(MESSY_CSV)
    out = run("auto", csv)
    assert out.result["routed_to"] == "table" and out.result["rows"] == 3

    txt = tmp_path / "notes.txt"
    txt.write_text("just words\n")
    out = run("auto", txt)
    assert out.result["routed_to"] == "probe" and out.result["media_type"] == "text/plain"


def test_octet_stream_is_sniffed_again(run: Run, tmp_path: Path) -> None:
    img = save_jpeg(tmp_path / "p.bin", 40, 20)
    out = run("auto", img, {"image": {"sizes": [10]}}, media_type="application/octet-stream")
    assert out.result["routed_to"] == "image"


def test_archive_depth_rides_along(run: Run, tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", {"x.txt": b"x"})
    out = run("auto", src, {"archive_depth": 2, "archive": {"depth": 0}})
    assert out.result["routed_to"] == "archive" and out.result["depth"] == 2
    assert out.children[0].options == {"archive_depth": 3, "archive": {"max_depth": 3}}


def test_nested_chain_stops_at_the_depth_limit(tmp_path: Path) -> None:
    # five zips nested in each other; follow the children the way the runner would.
    data = b"deepest"
    for level in range(5, 0, -1):
        data = zip_bytes({f"level{level}.zip" if level < 5 else "leaf.txt": data})
    path = tmp_path / "outer.zip"
    path.write_bytes(data)
    reg = build_registry()
    options: object = None
    depths = []
    for hop in range(10):
        try:
            out = run_processor("auto", path, options, out_dir=tmp_path / f"hop{hop}",
                                registry=reg)
        except Exception as exc:
            assert getattr(exc, "code", None) == "nesting_too_deep"
            break
        depths.append(out.result["depth"])
        (child,) = out.children
        path, options = child.path, child.options
    assert depths == [0, 1, 2]


@pytest.mark.parametrize(
    "bad",
    [{"nope": 1}, {"image": {"sizes": [10], "nope": 1}}, {"archive_depth": -1},
     {"table": {"format": "xml"}}],
)
def test_unknown_or_bad_options_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(BadOptions):
        build_registry().validate("auto", bad)


def test_registry_lists_the_builtins_with_clean_schemas() -> None:
    described = {p["name"]: p for p in build_registry().describe()}
    assert {"auto", "probe", "image", "pdf", "table", "archive"} <= set(described)
    for name in ("auto", "image", "pdf", "table", "archive"):
        assert described[name]["options_schema"]["additionalProperties"] is False


def test_builtin_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, conveyor.processors.builtin\n"
        "heavy = [m for m in ('PIL', 'duckdb', 'pypdfium2', 'av', 'fastexcel', 'pi_heif')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
