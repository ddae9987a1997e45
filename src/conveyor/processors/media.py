"""The ``media`` processor (optional extra ``conveyor[media]``): probe audio/video, poster frame.

PyAV runs FFmpeg's libraries in-process: a structured probe in milliseconds and a keyframe
poster (seek to about 10 % of the duration) without spawning ffmpeg. PyAV's wheel bundles GPL
codec libraries, hence an optional extra. The processor is registered only when ``av`` is
installed; that is checked with ``find_spec``, without importing it.
"""

from __future__ import annotations

from fractions import Fraction
from importlib.util import find_spec
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import ProcessorError
from conveyor.processors.base import Context, define

AVAILABLE = find_spec("av") is not None
#: Packets demuxed after the seek before giving up on a poster frame.
MAX_POSTER_PACKETS = 500


class MediaOptions(BaseModel):
    """Options of the ``media`` processor."""

    model_config = ConfigDict(extra="forbid")

    poster: bool = True
    poster_width: int = Field(default=1280, ge=16, le=4096)
    poster_at: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Poster position as a fraction of the duration."
    )


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(Fraction(value)) if not isinstance(value, float) else value
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _stream_info(stream: Any) -> dict[str, Any]:
    ctx = stream.codec_context
    info: dict[str, Any] = {
        "index": stream.index,
        "type": stream.type,
        "codec": getattr(ctx, "name", None) if ctx is not None else None,
        "duration": (
            float(stream.duration * stream.time_base)
            if stream.duration is not None and stream.time_base is not None
            else None
        ),
    }
    if stream.type == "video":
        info.update(
            width=getattr(ctx, "width", None),
            height=getattr(ctx, "height", None),
            fps=_number(stream.average_rate or stream.guessed_rate),
            pix_fmt=getattr(ctx, "pix_fmt", None),
        )
    elif stream.type == "audio":
        info.update(
            sample_rate=getattr(ctx, "sample_rate", None),
            channels=getattr(ctx, "channels", None),
        )
    return info


def _poster(ctx: Context, container: Any, duration: float | None, opts: MediaOptions) -> Any:
    import av

    video = next((s for s in container.streams if s.type == "video"), None)
    if video is None:
        return None
    video.thread_type = "AUTO"
    if duration and duration > 0 and opts.poster_at > 0:
        target = duration * opts.poster_at
        try:
            # Seek to the keyframe at or before the target: no decoding from the start.
            container.seek(int(target / float(video.time_base)), stream=video, backward=True)
        except av.error.FFmpegError:
            container.seek(0)
    for n, packet in enumerate(container.demux(video)):
        if n >= MAX_POSTER_PACKETS:
            return None
        for frame in packet.decode():
            image = frame.to_image()
            if image.width > opts.poster_width:
                h = max(1, round(image.height * opts.poster_width / image.width))
                image = image.resize((opts.poster_width, h))
            path = ctx.work_dir / "poster.webp"
            image.save(path, format="WEBP", quality=80)
            ctx.artifact_from_path("poster.webp", "image/webp", path)
            return {"width": image.width, "height": image.height, "time": frame.time}
    return None


def media(ctx: Context) -> dict[str, Any]:
    """Probe the container and its streams; save a poster frame of the first video stream."""
    import av

    opts: MediaOptions = ctx.options
    if ctx.input_path.stat().st_size == 0:
        raise ProcessorError("empty_file", "the file is empty")
    try:
        container = av.open(str(ctx.input_path), mode="r")
    except av.error.FFmpegError as exc:
        raise ProcessorError("corrupt_file", f"not a readable media file: {exc}") from None
    try:
        duration = container.duration / 1_000_000 if container.duration else None
        container_format = container.format.name
        bit_rate = container.bit_rate or None
        streams = [_stream_info(s) for s in container.streams]
        if not streams:
            raise ProcessorError("unsupported_format", "no audio or video streams")
        ctx.progress(0.3, "probed")
        poster = None
        if opts.poster:
            try:
                poster = _poster(ctx, container, duration, opts)
            except av.error.FFmpegError as exc:
                raise ProcessorError("corrupt_file", f"cannot decode a frame: {exc}") from None
    finally:
        container.close()
    ctx.progress(1.0, "done")
    return {
        "duration": duration,
        "format": container_format,
        "bit_rate": bit_rate,
        "streams": streams,
        "poster": poster,
    }


#: The processor, or None when ``av`` is not installed (then it is not registered).
MEDIA = (
    define(
        "media",
        options=MediaOptions,
        description="Audio/video probe (duration, streams, codecs) and a poster frame (PyAV)",
        accepts=["video/*", "audio/*"],
    )(media)
    if AVAILABLE
    else None
)
