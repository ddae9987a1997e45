"""The libvips engine's two ways of reading a file: mapped by libvips (up to
``MAPPED_BYTES``) and streamed through a Python reader (larger files, so a 100 MP JPEG is never
mapped whole). Both must give the same renditions and the same errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import ProcessorError
from conveyor.processors import image_vips

from .conftest import Run, photo, save_jpeg


@pytest.fixture(autouse=True)
def _vips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_IMAGE_ENGINE", "vips")


def _renditions(run: Run, src: Path) -> dict[str, bytes]:
    out = run("image", src, {"sizes": [1600, 700, 64]})
    return {name: Path(path).read_bytes() for name, path in out.artifacts.items()}


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_mapped_and_streamed_reads_give_the_same_renditions(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    src = tmp_path / f"p.{fmt}"
    photo(2400, 1600).save(src, format=fmt.upper())
    assert src.stat().st_size <= image_vips.MAPPED_BYTES
    mapped = _renditions(run, src)
    monkeypatch.setattr(image_vips, "MAPPED_BYTES", src.stat().st_size - 1)
    streamed = _renditions(run, src)
    assert sorted(mapped) == ["w1600.webp", "w64.webp", "w700.webp"]
    assert streamed == mapped


@pytest.mark.parametrize("streamed", [False, True])
def test_a_truncated_jpeg_is_corrupt_either_way(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    src = save_jpeg(tmp_path / "t.jpg", 1200, 800)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    if streamed:
        monkeypatch.setattr(image_vips, "MAPPED_BYTES", 0)
    with pytest.raises(ProcessorError) as err:
        run("image", src)
    assert err.value.code == "corrupt_file"
