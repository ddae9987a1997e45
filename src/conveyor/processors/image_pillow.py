"""The Pillow pixel engine of the ``image`` processor (``CONVEYOR_IMAGE_ENGINE=pillow``, and for
the formats libvips does not read here: BMP, HEIC).

A JPEG is decoded with ``draft()`` (DCT scaling) at the smallest scale that still covers the
widest rendition, and each rendition is resized from the previous, larger one.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from conveyor.errors import ProcessorError

if TYPE_CHECKING:
    from PIL import Image as PILImage


class PillowRenderer:
    """Makes the renditions of one opened image, widest first."""

    def __init__(self, im: PILImage.Image, opts: Any, alpha: bool, orientation: int,
                 out_size: tuple[int, int], widest: int) -> None:
        from PIL import ImageOps

        self.opts = opts
        self.icc: bytes | None = im.info.get("icc_profile")
        self.exif: bytes | None = im.info.get("exif") if opts.keep_metadata else None
        out_w = out_size[0]
        if im.format == "JPEG":
            # Shrink on load: DCT scaling to the smallest 1/2^k that still covers ``widest``.
            scale = widest / out_w
            im.draft("RGB", (math.ceil(im.width * scale), math.ceil(im.height * scale)))
        try:
            im.load()
            # exif_transpose copies even an upright image: only call it when it rotates.
            base: PILImage.Image = (
                (ImageOps.exif_transpose(im) or im) if orientation in range(2, 9) else im
            )
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ProcessorError("corrupt_file", f"cannot decode image: {exc}") from None
        mode = "RGBA" if alpha and opts.format != "jpeg" else "RGB"
        self.current = base if base.mode == mode else base.convert(mode)

    def render(self, width: int, height: int, dest: os.PathLike[str]) -> tuple[int, int]:
        """Write a ``width`` x ``height`` rendition to ``dest``; its size."""
        from PIL import Image

        if (width, height) != self.current.size:
            self.current = self.current.resize(
                (width, height), Image.Resampling.LANCZOS, reducing_gap=3.0
            )
        _save(self.current, dest, self.opts, self.icc, self.exif)
        return self.current.size


def _save(
    im: PILImage.Image,
    path: os.PathLike[str],
    opts: Any,
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
