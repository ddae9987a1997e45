"""Generated benchmark inputs (nothing is downloaded), written once per run to a temp dir."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Inputs:
    photo: Path  # 4000x3000 photo-like JPEG, ~4 MB
    small: Path  # 1 MB of random bytes
    tiny: Path  # a few bytes, for no-op jobs
    big: Path  # --big-mb MiB that do not compress


def photo_jpeg(width: int = 4000, height: int = 3000, seed: int = 42) -> bytes:
    """Gradients, low-frequency blobs and sensor-like noise: compresses like a real photo."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 200 * x + 30 * np.sin(y * 9)
    img[..., 1] = 150 * y + 40 * np.cos(x * 7 + y * 3)
    img[..., 2] = 120 * (1 - x) * y + 60
    small = np.clip(rng.normal(128, 40, (30, 40, 3)), 0, 255).astype(np.uint8)
    blobs = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    img += np.asarray(blobs, np.float32) - 128
    img += rng.normal(0, 14, (height, width, 3)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
    return buf.getvalue()


def write_incompressible(path: Path, size: int) -> None:
    """A random 1 MiB block repeated, each copy stamped with its counter (no sparse holes)."""
    block = bytearray(os.urandom(MiB))
    with path.open("wb") as out:
        written, counter = 0, 0
        while written < size:
            block[:8] = counter.to_bytes(8, "little")
            chunk = block[: min(MiB, size - written)]
            out.write(chunk)
            written += len(chunk)
            counter += 1


def make_inputs(root: Path, big_bytes: int) -> Inputs:
    root.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(
        photo=root / "photo-12mp.jpg",
        small=root / "small-1mb.bin",
        tiny=root / "tiny.txt",
        big=root / f"big-{big_bytes // MiB}mib.bin",
    )
    if not inputs.photo.exists():
        inputs.photo.write_bytes(photo_jpeg())
    if not inputs.small.exists():
        inputs.small.write_bytes(os.urandom(MiB))
    if not inputs.tiny.exists():
        inputs.tiny.write_bytes(b"hello, conveyor\n")
    if not inputs.big.exists() or inputs.big.stat().st_size != big_bytes:
        write_incompressible(inputs.big, big_bytes)
    return inputs
