"""The image job both baselines run: three WebP renditions, the way a tutorial writes it.

Each size decodes the original in full and resizes from it (no draft mode, no reuse of the
previous rendition), longest side 2048/1024/256, never upscaled, WebP quality 80: the same
output pixel sizes as conveyor's ``image`` pipeline with ``{"sizes": [2048, 1024, 256]}``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

SIZES = (2048, 1024, 256)
QUALITY = 80


def out_dir(job_id: str) -> Path:
    """Where a job's renditions go: ``$BENCH_OUT_DIR/<job id>/`` (the harness sets it)."""
    root = Path(os.environ.get("BENCH_OUT_DIR", "/tmp/conveyor-bench-out"))
    path = root / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_renditions(source: bytes | Path, job_id: str) -> list[tuple[int, int]]:
    """Write ``w{size}.webp`` for each size; returns the output dimensions."""
    dest = out_dir(job_id)
    dims: list[tuple[int, int]] = []
    for size in SIZES:
        src = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(src) as opened:
            img = opened.convert("RGB")  # full decode, as the tutorials do
        img.thumbnail((size, size))  # keeps the aspect ratio and never upscales
        img.save(dest / f"w{size}.webp", "WEBP", quality=QUALITY)
        dims.append(img.size)
    return dims
