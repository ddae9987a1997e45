"""The ``probe`` processor: what a file is, cheaply.

Media type (sniffed), size, sha256, and details that cost next to nothing: image dimensions
from the header, PDF page count, the first line of a text file.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from conveyor.digest import file_digest
from conveyor.processors.base import Context, define
from conveyor.processors.sniff import read_head, sniff


class ProbeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _details(ctx: Context, media_type: str) -> dict[str, Any]:
    path = ctx.input_path
    if media_type.startswith("image/") and media_type != "image/svg+xml":
        from PIL import Image

        try:
            with Image.open(path) as im:
                return {"width": im.width, "height": im.height, "format": im.format}
        except Exception:
            return {}
    if media_type.startswith("text/") or media_type in (
        "application/json",
        "application/x-ndjson",
    ):
        with open(path, "rb") as fh:
            first = fh.readline(512)
        return {"first_line": first.decode("utf-8", "replace").rstrip("\r\n")}
    return {}


@define(
    "probe",
    options=ProbeOptions,
    description="Identify a file: sniffed media type, size, sha256 and cheap details",
    accepts=["*/*"],
)
def probe(ctx: Context) -> dict[str, Any]:
    size, sha256 = file_digest(ctx.input_path)
    media_type = sniff(read_head(str(ctx.input_path)), ctx.input.filename)
    ctx.progress(1.0, "probed")
    return {
        "media_type": media_type,
        "size": size,
        "sha256": sha256,
        "details": _details(ctx, media_type),
    }
