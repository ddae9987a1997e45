from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest
from PIL import Image

from conveyor.errors import ProcessorError
from tests.conftest import need_module

from .conftest import Run

# PyAV comes with the ``dev`` extra (and ``media`` for users): under CI its absence fails.
av = need_module("av", "the media processor decodes with PyAV")


def make_video(path: Path, seconds: int = 3, fps: int = 10) -> Path:
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(seconds * fps):
            img = Image.new("RGB", (160, 120), (i * 8 % 256, 80, 160))
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_video_probe_and_poster(run: Run, tmp_path: Path) -> None:
    src = make_video(tmp_path / "clip.mp4")
    out = run("media", src)
    res = out.result
    assert res["duration"] == pytest.approx(3.0, abs=0.2)
    assert "mp4" in res["format"]
    (video,) = res["streams"]
    assert video["type"] == "video" and video["codec"] == "mpeg4"
    assert (video["width"], video["height"]) == (160, 120)
    assert video["fps"] == pytest.approx(10.0)
    with Image.open(out.artifacts["poster.webp"]) as im:
        assert im.format == "WEBP" and im.size == (160, 120)
    assert res["poster"]["width"] == 160


def test_audio_probe(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "tone.wav"
    with wave.open(str(src), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack("<h", 0) * 2 * 8000)
    out = run("media", src)
    (audio,) = out.result["streams"]
    assert audio["type"] == "audio" and audio["sample_rate"] == 8000 and audio["channels"] == 2
    assert out.result["duration"] == pytest.approx(1.0, abs=0.05)
    assert out.result["poster"] is None and "poster.webp" not in out.artifacts


def test_corrupt_media(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "bad.mp4"
    src.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13\x37" * 500)
    with pytest.raises(ProcessorError) as err:
        run("media", src)
    assert err.value.code == "corrupt_file"


def test_auto_routes_video(run: Run, tmp_path: Path) -> None:
    src = make_video(tmp_path / "clip.mp4", seconds=1)
    out = run("auto", src, {"media": {"poster": False}})
    assert out.result["routed_to"] == "media" and out.artifacts == {}
