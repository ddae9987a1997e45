from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conveyor.errors import ProcessorError
from conveyor.processors import BadOptions
from conveyor.processors.image import ImageOptions, _plan

from .conftest import Run, photo, save_jpeg


def test_default_renditions_from_a_jpeg(run: Run, tmp_path: Path) -> None:
    src = save_jpeg(tmp_path / "p.jpg", 3000, 2000)
    out = run("image", src)
    assert out.result["width"] == 3000 and out.result["height"] == 2000
    assert out.result["format"] == "JPEG" and out.result["alpha"] is False
    assert sorted(out.artifacts) == ["w1024.webp", "w2048.webp", "w256.webp"]
    for size in (2048, 1024, 256):
        with Image.open(out.artifacts[f"w{size}.webp"]) as im:
            assert im.format == "WEBP"
            assert im.size == (size, round(2000 * size / 3000))
    dims = {r["name"]: (r["width"], r["height"]) for r in out.result["renditions"]}
    assert dims["w256.webp"] == (256, 171)
    fractions = [f for f, _ in out.progress]
    assert len(fractions) == 3 and fractions == sorted(fractions) and fractions[-1] == 1.0


def test_never_upscales(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "small.png"
    photo(300, 200).save(src)
    out = run("image", src, {"sizes": [2048, 1024, 100], "format": "png"})
    widths = {r["size"]: r["width"] for r in out.result["renditions"]}
    assert widths == {2048: 300, 1024: 300, 100: 100}
    for name in ("w2048.png", "w1024.png"):
        with Image.open(out.artifacts[name]) as im:
            assert im.size == (300, 200)


def test_exif_orientation_applied_and_metadata_stripped(run: Run, tmp_path: Path) -> None:
    exif = {0x0112: 6, 0x010F: "Canon", 0x0110: "EOS R5"}
    src = save_jpeg(tmp_path / "rot.jpg", 400, 200, exif, original="2024:05:01 10:00:00")
    out = run("image", src, {"sizes": [100]})
    # Orientation 6 = rotate 90: the displayed image is portrait.
    assert (out.result["width"], out.result["height"]) == (200, 400)
    assert out.result["exif"] == {
        "Make": "Canon", "Model": "EOS R5", "Orientation": 6,
        "DateTimeOriginal": "2024:05:01 10:00:00",
    }
    with Image.open(out.artifacts["w100.webp"]) as im:
        assert im.size == (100, 200)
        assert not im.getexif()
        assert "exif" not in im.info


def test_keep_metadata_keeps_exif_with_upright_orientation(run: Run, tmp_path: Path) -> None:
    src = save_jpeg(tmp_path / "rot.jpg", 400, 200, {0x0112: 6, 0x010F: "Canon"})
    out = run("image", src, {"sizes": [100], "format": "jpeg", "keep_metadata": True})
    with Image.open(out.artifacts["w100.jpg"]) as im:
        assert im.format == "JPEG" and im.size == (100, 200)
        assert im.getexif()[0x010F] == "Canon"
        assert im.getexif()[0x0112] == 1


def test_alpha_is_kept_for_webp_and_png_dropped_for_jpeg(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    im = photo(64, 64, "RGBA")
    im.putalpha(Image.linear_gradient("L").resize((64, 64)))  # real transparency
    im.save(src)
    out = run("image", src, {"sizes": [32]})
    assert out.result["alpha"] is True and out.result["mode"] == "RGBA"
    with Image.open(out.artifacts["w32.webp"]) as im:
        assert im.mode == "RGBA"
    jpeg = run("image", src, {"sizes": [32], "format": "jpeg"})
    with Image.open(jpeg.artifacts["w32.jpg"]) as im:
        assert im.mode == "RGB"


@pytest.mark.parametrize(("fmt", "ext", "pil"), [("avif", "avif", "AVIF"), ("png", "png", "PNG")])
def test_output_formats(run: Run, tmp_path: Path, fmt: str, ext: str, pil: str) -> None:
    src = save_jpeg(tmp_path / "p.jpg", 200, 100)
    out = run("image", src, {"sizes": [50], "format": fmt, "quality": 50})
    assert out.artifact_types[f"w50.{ext}"] == f"image/{ext}"
    with Image.open(out.artifacts[f"w50.{ext}"]) as im:
        assert im.format == pil and im.size == (50, 25)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP", "WEBP", "AVIF"])
def test_accepted_input_formats(run: Run, tmp_path: Path, fmt: str) -> None:
    src = tmp_path / f"in.{fmt.lower()}"
    photo(120, 80).save(src, format=fmt)
    out = run("image", src, {"sizes": [60]})
    assert out.result["format"] == fmt
    assert out.result["renditions"][0]["width"] == 60


def test_gif_transparency_counts_as_alpha(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "t.gif"
    im = Image.new("P", (20, 20), 0)
    im.putpalette([0, 0, 0, 255, 0, 0])
    im.save(src, transparency=0)
    assert run("image", src, {"sizes": [10]}).result["alpha"] is True


def test_pixel_cap_is_configurable(run: Run, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "p.png"
    photo(60, 50).save(src)
    monkeypatch.setenv("CONVEYOR_MAX_IMAGE_PIXELS", "2999")
    with pytest.raises(ProcessorError) as err:
        run("image", src)
    assert err.value.code == "decompression_bomb" and not err.value.retryable
    monkeypatch.setenv("CONVEYOR_MAX_IMAGE_PIXELS", "3000")
    assert run("image", src, {"sizes": [10]}).result["width"] == 60


def test_plan_is_widest_first_and_capped() -> None:
    assert _plan(500, [256, 2048, 1024, 256]) == [(2048, 500), (1024, 500), (256, 256)]


@pytest.mark.parametrize(
    "bad",
    [{"sizes": [0]}, {"sizes": [16385]}, {"sizes": []}, {"quality": 0}, {"quality": 101},
     {"format": "gif"}, {"size": 10}],
)
def test_bad_options_are_refused(run: Run, tmp_path: Path, bad: dict[str, object]) -> None:
    src = save_jpeg(tmp_path / "p.jpg", 10, 10)
    with pytest.raises(BadOptions):
        run("image", src, bad)


def test_options_schema_is_clean() -> None:
    schema = ImageOptions.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["sizes"]["items"] == {
        "type": "integer", "minimum": 1, "maximum": 16384
    }
    assert schema["properties"]["format"]["enum"] == ["webp", "jpeg", "avif", "png"]
