"""The ``auto`` processor (the default pipeline): route a file by its sniffed media type.

images -> ``image``, PDF -> ``pdf``, tables -> ``table``, zip/tar -> ``archive``, audio/video ->
``media`` (when installed), anything else -> ``probe``. Per-family options ride along as
sub-objects; an unknown key anywhere is a validation error (422 at the API).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.processors.archive import TAR_TYPES, ZIP_TYPES, ArchiveOptions
from conveyor.processors.base import Context, define
from conveyor.processors.image import ImageOptions
from conveyor.processors.media import MediaOptions
from conveyor.processors.pdf import PdfOptions
from conveyor.processors.sniff import OCTET_STREAM, read_head, sniff
from conveyor.processors.table import XLSX_TYPE, TableOptions

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff", "image/bmp",
               "image/heic", "image/heif", "image/avif")
TABLE_TYPES = ("text/csv", "text/tab-separated-values", "application/json",
               "application/x-ndjson", "application/vnd.apache.parquet", XLSX_TYPE)


class AutoOptions(BaseModel):
    """Options of the ``auto`` pipeline: optional options for each family it may route to."""

    model_config = ConfigDict(extra="forbid")

    image: ImageOptions | None = None
    pdf: PdfOptions | None = None
    table: TableOptions | None = None
    archive: ArchiveOptions | None = None
    media: MediaOptions | None = None
    archive_depth: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Internal: how deep in nested archives this file is.",
        json_schema_extra={"x-internal": True},
    )


def route(media_type: str, available: set[str]) -> str:
    """The processor for a media type (pure): one of ``available`` or ``probe``."""
    if media_type in IMAGE_TYPES:
        name = "image"
    elif media_type == "application/pdf":
        name = "pdf"
    elif media_type in TABLE_TYPES:
        name = "table"
    elif media_type in ZIP_TYPES or media_type in TAR_TYPES:
        name = "archive"
    elif media_type.startswith(("video/", "audio/")):
        name = "media"
    else:
        name = "probe"
    return name if name in available else "probe"


@define(
    "auto",
    options=AutoOptions,
    description="Route by the sniffed media type to image, pdf, table, archive, media or probe",
    accepts=["*/*"],
)
def auto(ctx: Context) -> dict[str, Any]:
    """Delegate to the processor for this file's type and return its result with ``routed_to``."""
    opts: AutoOptions = ctx.options
    media_type = ctx.input.media_type
    if media_type in (OCTET_STREAM, "", None):
        media_type = sniff(read_head(str(ctx.input_path)), ctx.input.filename,
                           ctx.input.declared_type)
    # Routed through the context's registry: a test's or a plug-in host's, not a global one.
    name = route(media_type, set(ctx.registry.processors))
    sub: BaseModel | None = getattr(opts, name, None) if name != "probe" else None
    if name == "archive":
        # Depth always comes from the chain of parents, never from the caller's sub-options.
        sub = (opts.archive or ArchiveOptions()).model_copy(update={"depth": opts.archive_depth})
    options = sub.model_dump(mode="json") if sub is not None else None
    result = ctx.delegate(name, options)
    return {"routed_to": name, **(result if isinstance(result, dict) else {"result": result})}
