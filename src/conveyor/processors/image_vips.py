"""The libvips pixel engine of the ``image`` processor (``CONVEYOR_IMAGE_ENGINE=vips``).

Each rendition comes from ``pyvips.Image.thumbnail_source``: shrink-on-load (JPEG DCT scaling,
WebP and HEIF scaled decode), sequential access, and the resize streamed straight into the
encoder, so a 100-megapixel JPEG never sits in memory whole. libvips maps the file it reads, and
a 100 MB JPEG would then count 100 MB more in the worker's resident set: a file over
:data:`MAPPED_BYTES` is fed to libvips through a buffered Python reader instead (:func:`_source`).
The widest rendition, when small enough, is kept in memory and the narrower ones are made from
it.

libvips is configured once per process (:func:`vips`): only the loaders of the formats the
processor accepts may run (every other loader, and every loader libvips calls untrusted, is
blocked), the operation cache is off (a worker handles one image at a time, nothing is reused)
and libvips uses :data:`CONCURRENCY` threads. The caller has already read the header with
Pillow (format allow-list, pixel cap); here the file is read again by the explicit libvips
loader of that format, and the loader libvips used is checked to be that one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, BinaryIO

from conveyor.errors import ProcessorError

if TYPE_CHECKING:
    import pyvips

#: Pillow format name -> the libvips loader that must read it. Formats not here (BMP, and
#: HEIC, which the bundled libheif cannot decode) stay on Pillow.
LOADERS = {"JPEG": "jpegload", "PNG": "pngload", "WEBP": "webpload", "GIF": "gifload",
           "TIFF": "tiffload", "AVIF": "heifload"}
#: The libvips loader classes left unblocked (each with its file/buffer/source subclasses).
_ALLOWED_CLASSES = ("VipsForeignLoadJpeg", "VipsForeignLoadPng", "VipsForeignLoadWebp",
                    "VipsForeignLoadNsgif", "VipsForeignLoadTiff", "VipsForeignLoadHeif")
#: libvips worker threads per process. Workers already run one per core; more threads per
#: image only add contention (bench/results/processors.md).
CONCURRENCY = 1
#: A widest rendition up to this many pixels is kept in memory to make the narrower ones.
MEMORY_BASE_PIXELS = 16_000_000
#: Inputs up to this size are mapped by libvips; larger ones are streamed (:func:`_source`).
MAPPED_BYTES = 32 << 20
#: Loader errors that fail the job: a truncated file is corrupt, as it is for Pillow.
_FAIL_ON = "truncated"

_configured = False


def vips() -> Any:
    """``pyvips``, configured for untrusted input (once per process)."""
    global _configured
    import pyvips

    if not _configured:
        pyvips.block_untrusted_set(True)
        pyvips.operation_block_set("VipsForeignLoad", True)
        for name in _ALLOWED_CLASSES:
            pyvips.operation_block_set(name, False)
        pyvips.cache_set_max(0)
        pyvips.concurrency_set(CONCURRENCY)
        _configured = True
    return pyvips


def _corrupt(exc: Exception) -> ProcessorError:
    detail = str(exc).strip().splitlines()
    return ProcessorError("corrupt_file", f"cannot decode image: {' '.join(detail[-2:])}")


def _source(path: str) -> tuple[pyvips.Source, BinaryIO]:
    """A libvips source for ``path``. A file of up to :data:`MAPPED_BYTES` is libvips' own
    (it maps the file: no Python call per 4 KiB read, 7% of a photo's decode); a larger one
    is read through a 1 MiB-buffered Python reader, so it is never mapped whole."""
    pv = vips()
    fh = open(path, "rb", buffering=1 << 20)  # closed by the caller
    if os.fstat(fh.fileno()).st_size <= MAPPED_BYTES:
        return pv.Source.new_from_descriptor(fh.fileno()), fh
    source = pv.SourceCustom()
    source.on_read(fh.read)
    source.on_seek(fh.seek)
    return source, fh


def read_header(path: os.PathLike[str], fmt: str, cap: int) -> tuple[int, bytes | None]:
    """Check the file with the explicit libvips loader of ``fmt`` (header only).

    Returns the EXIF orientation (1 when none) and the raw EXIF block, if any.
    """
    pv = vips()
    source, fh = _source(os.fspath(path))
    try:
        head = getattr(pv.Image, LOADERS[fmt] + "_source")(source, access="sequential")
    except pv.Error as exc:
        raise _corrupt(exc) from None
    finally:
        fh.close()
    if head.width * head.height > cap:
        raise ProcessorError(
            "decompression_bomb", f"{head.width}x{head.height} pixels is over the cap of {cap}"
        )
    fields = head.get_fields()
    exif = head.get("exif-data") if "exif-data" in fields else None
    orientation = head.get("orientation") if "orientation" in fields else 1
    return (orientation if orientation in range(1, 9) else 1), exif


class VipsRenderer:
    """Makes the renditions of one file, widest first (see :class:`conveyor.processors.image`)."""

    def __init__(self, path: os.PathLike[str], fmt: str, opts: Any, alpha: bool) -> None:
        self.pv = vips()
        self.path = os.fspath(path)
        self.loader = LOADERS[fmt]
        self.opts = opts
        self.bands = 4 if alpha and opts.format != "jpeg" else 3
        self.base: pyvips.Image | None = None

    def render(self, width: int, height: int, dest: os.PathLike[str]) -> tuple[int, int]:
        """Write a ``width`` x ``height`` rendition to ``dest``; its size."""
        pv = self.pv
        source, fh = _source(self.path)
        try:
            if self.base is not None:
                img = self.base.thumbnail_image(width, height=height, size="force")
            else:
                img = pv.Image.thumbnail_source(source, width, height=height, size="force",
                                                option_string=f"fail_on={_FAIL_ON}")
                loader = img.get("vips-loader") if "vips-loader" in img.get_fields() else ""
                if loader.split("_")[0] != self.loader:
                    raise ProcessorError(
                        "unsupported_format", f"libvips read the file as {loader or 'unknown'}"
                    )
                img = self._shape(img)
                if width * height <= MEMORY_BASE_PIXELS:
                    img = img.copy_memory()
                    self.base = img
            self._save(img, dest)
        except pv.Error as exc:
            raise _corrupt(exc) from None
        finally:
            fh.close()
        return img.width, img.height

    def _shape(self, img: pyvips.Image) -> pyvips.Image:
        """8-bit sRGB with 3 bands, or 4 with alpha (as Pillow's RGB / RGBA)."""
        if img.format != "uchar" or img.interpretation not in ("srgb", "b-w"):
            img = img.colourspace("srgb")
        if img.bands in (1, 2):  # grey (with alpha): to RGB(A)
            img = img.colourspace("srgb")
        if img.bands > self.bands:
            img = img.extract_band(0, n=self.bands)
        elif img.bands < self.bands:
            img = img.bandjoin(255)
        return img.copy(interpretation="srgb")

    def _save(self, img: pyvips.Image, dest: os.PathLike[str]) -> None:
        keep = self.pv.enums.ForeignKeep
        opts = self.opts
        # ICC is colour, not privacy: always kept. EXIF only when asked; libvips rewrites its
        # Orientation to 1, the pixels being upright already.
        params: dict[str, Any] = {"keep": keep.ICC | (keep.EXIF if opts.keep_metadata else 0)}
        target = os.fspath(dest)
        if opts.format == "webp":
            img.webpsave(target, Q=opts.quality, effort=opts.effort, **params)
        elif opts.format == "jpeg":
            img.jpegsave(target, Q=opts.quality, interlace=True, optimize_coding=False, **params)
        elif opts.format == "avif":
            # Pillow's AVIF speed is 10 - effort; libvips' effort 0..9 is aom's 9 - speed.
            img.heifsave(target, Q=opts.quality, compression="av1",
                         effort=max(0, opts.effort - 1), **params)
        else:
            img.pngsave(target, compression=6, **params)
