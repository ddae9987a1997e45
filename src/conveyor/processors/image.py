"""The ``image`` processor: resized renditions of a photo or picture, metadata stripped.

Pillow (plus pi-heif for HEIC input) opens only an allow-list of formats, so EPS (Ghostscript),
FITS (CVE-2026-40192) and the other exotic decoders never see user bytes. The pixel count is
checked from the header before anything is decoded (``ctx.limits.max_image_pixels``, from
``CONVEYOR_MAX_IMAGE_PIXELS``, default 100 MP). Renditions are ``w{size}.{ext}`` where ``size``
is the target *width* (as in ``srcset`` ``w`` descriptors); an image is never upscaled, so a
size wider than the image gives a rendition at the image's own width.

Fast paths: a JPEG is decoded with ``draft()`` (DCT scaling) at the smallest scale that still
covers the largest rendition, and each rendition is resized from the previous, larger one.
pyvips is not used: Pillow with these fast paths is as fast on JPEG (reference/libraries.md 1.1).
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import ProcessorError
from conveyor.processors.base import Context, define

if TYPE_CHECKING:
    from PIL import Image as PILImage

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


def _exif_fields(im: PILImage.Image) -> tuple[dict[str, Any], int]:
    exif = im.getexif()
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
    from PIL import Image, ImageOps

    opts: ImageOptions = ctx.options
    if ctx.input.size == 0 or os.path.getsize(ctx.input_path) == 0:
        raise ProcessorError("empty_file", "the file is empty")
    im = _open(ctx.input_path, ctx.limits.max_image_pixels)
    with im:
        fmt = im.format
        src_w, src_h, src_mode = im.width, im.height, im.mode
        alpha = _has_alpha(im)
        exif_fields, orientation = _exif_fields(im)
        icc = im.info.get("icc_profile")
        exif_bytes = im.info.get("exif") if opts.keep_metadata else None
        # Dimensions as displayed, once the EXIF orientation is applied.
        swap = orientation in (5, 6, 7, 8)
        out_w, out_h = (src_h, src_w) if swap else (src_w, src_h)
        plan = _plan(out_w, opts.sizes)
        widest = plan[0][1]
        if fmt == "JPEG":
            # Shrink on load: DCT scaling to the smallest 1/2^k that still covers ``widest``.
            scale = widest / out_w
            im.draft("RGB", (math.ceil(src_w * scale), math.ceil(src_h * scale)))
        try:
            im.load()
            # exif_transpose copies even an upright image: only call it when it rotates.
            base: PILImage.Image = (
                (ImageOps.exif_transpose(im) or im) if orientation in range(2, 9) else im
            )
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ProcessorError("corrupt_file", f"cannot decode image: {exc}") from None
        mode = "RGBA" if alpha and opts.format != "jpeg" else "RGB"
        current = base if base.mode == mode else base.convert(mode)
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
                if (width, height) != current.size:
                    current = current.resize(
                        (width, height), Image.Resampling.LANCZOS, reducing_gap=3.0
                    )
                w, h = current.size
                tmp = ctx.work_dir / name
                _save(current, tmp, opts, icc, exif_bytes)
                done[width] = (name, w, h)
                if i < len(plan) - 1 and plan[i + 1][1] == width:
                    # Keep a copy for the duplicate that follows before publishing this one.
                    shutil.copyfile(tmp, ctx.work_dir / f"{name}.keep")
                    done[width] = (f"{name}.keep", w, h)
                ctx.artifact_from_path(name, _MEDIA[opts.format], tmp)
            renditions.append({"size": size, "name": name, "width": w, "height": h})
            ctx.progress((i + 1) / len(plan), f"rendition {name}")
    return {
        "width": out_w,
        "height": out_h,
        "format": fmt,
        "mode": src_mode,
        "alpha": alpha,
        "exif": exif_fields,
        "renditions": renditions,
    }


def _save(
    im: PILImage.Image,
    path: os.PathLike[str],
    opts: ImageOptions,
    icc: bytes | None,
    exif: bytes | None,
) -> None:
    params: dict[str, Any] = {}
    if icc:
        params["icc_profile"] = icc  # colour, not privacy: kept so colours stay right
    if exif:
        from PIL import Image

        # The pixels are already upright: store Orientation=1 so viewers don't rotate again.
        ex = Image.Exif()
        ex.load(exif)
        ex[0x0112] = 1
        params["exif"] = ex.tobytes()
    if opts.format == "webp":
        params.update(quality=opts.quality, method=opts.effort)
    elif opts.format == "jpeg":
        params.update(quality=opts.quality, optimize=False, progressive=True)
    elif opts.format == "avif":
        params.update(quality=opts.quality, speed=max(0, 10 - opts.effort))
    else:
        params.update(optimize=False, compress_level=6)
    im.save(path, format=opts.format.upper(), **params)
