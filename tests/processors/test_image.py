from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conveyor.errors import ProcessorError
from conveyor.processors import BadOptions
from conveyor.processors.image import ImageOptions, _plan

from .conftest import Run, photo, save_jpeg


@pytest.fixture(autouse=True)
def _both_engines(image_engine: str) -> None:
    """Every test here runs on libvips and on Pillow."""


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


# Where the stored image's top-left (red) and top-right (green) corners are seen once the EXIF
# orientation is applied, from the EXIF 2.32 table ("row 0 is at the visual ..., column 0 at
# the visual ..."), written out by hand rather than computed with Pillow.
_SEEN_AT = {
    1: {"red": "top-left", "green": "top-right"},
    2: {"red": "top-right", "green": "top-left"},
    3: {"red": "bottom-right", "green": "bottom-left"},
    4: {"red": "bottom-left", "green": "bottom-right"},
    5: {"red": "top-left", "green": "bottom-left"},
    6: {"red": "top-right", "green": "bottom-right"},
    7: {"red": "bottom-right", "green": "top-right"},
    8: {"red": "bottom-left", "green": "top-left"},
}
_COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "grey": (90, 90, 110)}


def _marked_jpeg(path: Path, orientation: int) -> Path:
    """A 400x200 grey JPEG, red block in the stored top-left corner, green in the top-right."""
    im = Image.new("RGB", (400, 200), _COLOURS["grey"])
    im.paste(_COLOURS["red"], (0, 0, 80, 80))
    im.paste(_COLOURS["green"], (320, 0, 400, 80))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def _corner_colours(im: Image.Image) -> dict[str, str]:
    """The named colour nearest to the pixel a few pixels in from each corner."""
    rgb = im.convert("RGB")
    w, h = rgb.size
    points = {"top-left": (4, 4), "top-right": (w - 5, 4), "bottom-left": (4, h - 5),
              "bottom-right": (w - 5, h - 5)}
    seen = {}
    for corner, xy in points.items():
        pixel = rgb.getpixel(xy)
        assert isinstance(pixel, tuple)
        seen[corner] = min(_COLOURS, key=lambda name: sum(
            (a - b) ** 2 for a, b in zip(pixel, _COLOURS[name], strict=True)))
    return seen


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_moves_the_pixels(run: Run, tmp_path: Path, orientation: int) -> None:
    src = _marked_jpeg(tmp_path / f"o{orientation}.jpg", orientation)
    out = run("image", src, {"sizes": [100], "format": "png"})
    swapped = orientation >= 5
    assert (out.result["width"], out.result["height"]) == ((200, 400) if swapped else (400, 200))
    expected = {corner: "grey" for corner in ("top-left", "top-right", "bottom-left",
                                              "bottom-right")}
    for colour, corner in _SEEN_AT[orientation].items():
        expected[corner] = colour
    with Image.open(out.artifacts["w100.png"]) as im:
        assert im.size == ((100, 200) if swapped else (100, 50))
        assert _corner_colours(im) == expected


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


def test_runs_under_the_worker_address_space_cap(tmp_path: Path, image_engine: str) -> None:
    """A 24 MP PNG (no shrink-on-load) under RLIMIT_AS 2048 MiB, as a worker runs it."""
    from conveyor.processors.base import ProcessorLimits
    from conveyor.testing import run_isolated

    src = tmp_path / "big.png"
    photo(6000, 4000).save(src, compress_level=1)
    outcome = run_isolated("image", src, {"sizes": [2048, 256]}, out_dir=tmp_path / "out",
                           memory_mb=2048, limits=ProcessorLimits(image_engine=image_engine))
    assert outcome.ok, outcome
    assert [r["width"] for r in outcome.result["renditions"]] == [2048, 256]


def test_libvips_runs_only_the_allowed_loaders(tmp_path: Path, image_engine: str) -> None:
    """libvips would read a CSV, a matrix or a .vips file as an image: all blocked."""
    from conveyor.processors.image_vips import vips

    pyvips = vips()
    for name, data in (("m.csv", b"1,2\n3,4\n"), ("m.mat", b"2 2\n1 2\n3 4\n")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(pyvips.Error):
            pyvips.Image.new_from_file(str(path)).avg()
    jpeg = save_jpeg(tmp_path / "ok.jpg", 40, 30)
    assert pyvips.Image.new_from_file(str(jpeg)).width == 40
