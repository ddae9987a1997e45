"""The ``image`` processor: resized renditions of a photo or picture, metadata stripped.

Pillow (plus pi-heif for HEIC input) opens only an allow-list of formats, so EPS (Ghostscript),
FITS (CVE-2026-40192) and the other exotic decoders never see user bytes. The pixel count is
checked from the header before anything is decoded (``ctx.limits.max_image_pixels``, from
``CONVEYOR_MAX_IMAGE_PIXELS``, default 100 MP). Renditions are ``w{size}.{ext}`` where ``size``
is the target *width* (as in ``srcset`` ``w`` descriptors); an image is never upscaled, so a
size wider than the image gives a rendition at the image's own width.

Pillow reads the header (format allow-list, pixel cap, mode, transparency) whatever the engine.
The pixels are then made by libvips (:mod:`conveyor.processors.image_vips`: shrink-on-load,
streaming, a 100 MP JPEG in well under 256 MB) or, with ``CONVEYOR_IMAGE_ENGINE=pillow`` and for
the formats libvips does not read here (BMP, HEIC), by Pillow
(:mod:`conveyor.processors.image_pillow`). Both give the same renditions, names and result.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import ProcessorError
from conveyor.processors.base import Context, define

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image as PILImage


class Renderer(Protocol):
    """A pixel engine: writes one rendition, widest first, and says its size."""

    def render(self, width: int, height: int, dest: Path) -> tuple[int, int]: ...

#: Pillow format names we decode. Never EPS (runs Ghostscript), FITS, PSD, ...
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "AVIF")

_EXT = {"webp": "webp", "jpeg": "jpg", "avif": "avif", "png": "png"}
_MEDIA = {"webp": "image/webp", "jpeg": "image/jpeg", "avif": "image/avif", "png": "image/png"}
_EXIF_TAGS = {0x010F: "Make", 0x0110: "Model", 0x0112: "Orientation"}
_EXIF_IFD, _DATETIME_ORIGINAL = 0x8769, 0x9003


class ImageOptions(BaseModel):
    """Options of the ``image`` processor."""

    model_config = ConfigDict(extra="forbid")

    sizes: list[Annotated[int, Field(ge=1, le=16384)]] = Field(
        default=[2048, 1024, 256],
        min_length=1,
        max_length=8,
        description="Target widths in pixels; never upscaled.",
    )
    format: Literal["webp", "jpeg", "avif", "png"] = "webp"
    quality: int = Field(default=80, ge=1, le=100)
    effort: int = Field(
        default=1,
        ge=0,
        le=6,
        description="Encoder effort (WebP method / AVIF speed): higher is smaller and slower. "
        "1 encodes a 2048 px WebP about 3x faster than 4, for files about 10% larger.",
    )
    keep_metadata: bool = Field(
        default=False, description="Keep EXIF in the renditions (stripped by default)."
    )


def _open(path: os.PathLike[str], cap: int) -> PILImage.Image:
    """Open (header only) with the allow-list and the pixel cap; map failures to codes."""
    from PIL import Image, UnidentifiedImageError

    _register_heif()
    # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that; with the limit set to
    # our cap and the warning made an error, anything over the cap is refused at open.
    # Pillow's limit is process-global: set it for this open only.
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, cap
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path, formats=list(ALLOWED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ProcessorError("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError:
        raise ProcessorError(
            "unsupported_format", f"not one of the accepted formats: {', '.join(ALLOWED_FORMATS)}"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ProcessorError("corrupt_file", f"cannot read image header: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    # Plugins that skip Pillow's own check (HEIF) are caught here, still before decoding.
    if im.width * im.height > cap:
        im.close()
        raise ProcessorError(
            "decompression_bomb", f"{im.width}x{im.height} pixels is over the cap of {cap}"
        )
    return im


_heif_registered = False


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        import pi_heif

        pi_heif.register_heif_opener()
        _heif_registered = True


def _exif_fields(exif: PILImage.Exif) -> tuple[dict[str, Any], int]:
    fields: dict[str, Any] = {}
    for tag, name in _EXIF_TAGS.items():
        if tag in exif:
            fields[name] = _plain(exif[tag])
    original = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL)
    if original is not None:
        fields["DateTimeOriginal"] = _plain(original)
    orientation = exif.get(0x0112, 1)
    return fields, orientation if isinstance(orientation, int) else 1


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    if isinstance(value, str):
        return value.rstrip("\x00").strip()
    if isinstance(value, int | float | bool):
        return value
    return str(value)


def _has_alpha(im: PILImage.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )


def _plan(width: int, sizes: list[int]) -> list[tuple[int, int]]:
    """``(requested size, effective width)`` widest first; never wider than the image."""
    return sorted(((s, min(s, width)) for s in set(sizes)), key=lambda p: -p[0])


@define(
    "image",
    options=ImageOptions,
    description="Image renditions (webp/jpeg/avif/png), EXIF orientation applied, metadata "
    "stripped, decompression bombs refused",
    accepts=["image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff", "image/bmp",
             "image/heic", "image/heif", "image/avif"],
)
def image(ctx: Context) -> dict[str, Any]:
    """Make one rendition per requested width and report the image's properties."""
    from PIL import Image

    from conveyor.processors.image_pillow import PillowRenderer
    from conveyor.processors.image_vips import LOADERS, VipsRenderer, read_header

    opts: ImageOptions = ctx.options
    if ctx.input.size == 0 or os.path.getsize(ctx.input_path) == 0:
        raise ProcessorError("empty_file", "the file is empty")
    cap = ctx.limits.max_image_pixels
    im = _open(ctx.input_path, cap)
    with im:
        fmt = str(im.format)
        src_w, src_h, src_mode = im.width, im.height, im.mode
        alpha = _has_alpha(im)
        use_vips = ctx.limits.image_engine == "vips" and fmt in LOADERS
        if use_vips:
            # libvips' header: Pillow's getexif() would decode a whole PNG to find its eXIf.
            vips_orientation, blob = read_header(ctx.input_path, fmt, cap)
            exif = Image.Exif()
            if blob:
                exif.load(blob)
            exif_fields, _ = _exif_fields(exif)
            orientation = vips_orientation  # the one libvips applies
        else:
            exif_fields, orientation = _exif_fields(im.getexif())
        # Dimensions as displayed, once the EXIF orientation is applied.
        swap = orientation in (5, 6, 7, 8)
        out_w, out_h = (src_h, src_w) if swap else (src_w, src_h)
        plan = _plan(out_w, opts.sizes)
        renderer: Renderer
        if use_vips:
            renderer = VipsRenderer(ctx.input_path, fmt, opts, alpha)
        else:
            renderer = PillowRenderer(im, opts, alpha, orientation, (out_w, out_h), plan[0][1])
        renditions = _publish(ctx, renderer, plan, out_w, out_h)
    return {
        "width": out_w,
        "height": out_h,
        "format": fmt,
        "mode": src_mode,
        "alpha": alpha,
        "exif": exif_fields,
        "renditions": renditions,
    }


def _publish(ctx: Context, renderer: Renderer, plan: list[tuple[int, int]], out_w: int,
             out_h: int) -> list[dict[str, Any]]:
    """Render and publish each planned rendition; equal effective widths are copies."""
    opts: ImageOptions = ctx.options
    renditions = []
    done: dict[int, tuple[str, int, int]] = {}
    for i, (size, width) in enumerate(plan):
        if ctx.cancelled():
            raise ProcessorError("cancelled", "the job was cancelled")
        name = f"w{size}.{_EXT[opts.format]}"
        if width in done:  # same effective width as a wider request: copy, don't re-encode
            first, w, h = done[width]
            with open(ctx.work_dir / first, "rb") as src, ctx.artifact(
                name, _MEDIA[opts.format]
            ) as out:
                out.write(src.read())
        else:
            height = max(1, round(out_h * width / out_w))
            tmp = ctx.work_dir / name
            w, h = renderer.render(width, height, tmp)
            done[width] = (name, w, h)
            if i < len(plan) - 1 and plan[i + 1][1] == width:
                # Keep a copy for the duplicate that follows before publishing this one.
                shutil.copyfile(tmp, ctx.work_dir / f"{name}.keep")
                done[width] = (f"{name}.keep", w, h)
            ctx.artifact_from_path(name, _MEDIA[opts.format], tmp)
        renditions.append({"size": size, "name": name, "width": w, "height": h})
        ctx.progress((i + 1) / len(plan), f"rendition {name}")
    return renditions
