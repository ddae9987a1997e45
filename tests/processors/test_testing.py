"""The in-process harness itself: LocalContext and run_processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.processors import BadOptions, Context, Registry, processor
from conveyor.testing import LocalContext, run_processor


@pytest.fixture
def registry() -> Registry:
    reg = Registry()

    @processor("write", description="writes two artifacts", registry=reg)
    def write(ctx: Context) -> dict[str, Any]:
        with ctx.artifact("a.txt", "text/plain") as fh:
            fh.write(b"A")
        tmp = ctx.work_dir / "b.bin"
        tmp.write_bytes(b"B")
        ctx.artifact_from_path("b.bin", "application/octet-stream", tmp)
        child = ctx.work_dir / "c.txt"
        child.write_bytes(b"C")
        cid = ctx.add_child(child, "c.txt", pipeline="write")
        ctx.progress(1.0, "done")
        return {"child": cid, "cancelled": ctx.cancelled()}

    @processor("outer", registry=reg)
    def outer(ctx: Context) -> Any:
        return {"inner": ctx.delegate("write")}

    return reg


def test_run_processor_collects_everything(tmp_path: Path, registry: Registry) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x")
    out = run_processor("outer", src, out_dir=tmp_path / "o", registry=registry)
    assert out.result == {"inner": {"child": "local.1", "cancelled": False}}
    assert {k: v.read_bytes() for k, v in out.artifacts.items()} == {"a.txt": b"A", "b.bin": b"B"}
    assert out.artifact_types["b.bin"] == "application/octet-stream"
    assert out.progress == [(1.0, "done")]
    assert [(c.filename, c.path.read_bytes()) for c in out.children] == [("c.txt", b"C")]


def test_delegate_validates_options(tmp_path: Path, registry: Registry) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x")
    ctx = LocalContext(src, options=registry.processors["outer"].validate_options({}),
                       work_dir=tmp_path, artifact_dir=tmp_path / "a", registry=registry)
    with pytest.raises(BadOptions):
        ctx.delegate("write", {"unknown": 1})


def test_context_guards(tmp_path: Path, registry: Registry) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x")
    ctx = LocalContext(src, options=registry.processors["outer"].validate_options({}),
                       work_dir=tmp_path, artifact_dir=tmp_path / "a", registry=registry)
    assert ctx.input.size == 1 and ctx.input.media_type == "text/plain"
    with pytest.raises(ValueError):
        ctx.progress(1.5)
    with pytest.raises(ValueError), ctx.artifact("../escape", "text/plain"):
        pass
    ctx.cancel()
    assert ctx.cancelled()
