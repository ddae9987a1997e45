"""Processors that misbehave on purpose, for the engine, API and UI tests.

Load with ``CONVEYOR_PROCESSORS=conveyor_testprocs`` (this folder on PYTHONPATH).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from conveyor.errors import ProcessorError
from conveyor.processors import Context, processor


class SleepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 1.0
    #: Check ctx.cancelled() while sleeping (a cooperative processor) or not.
    cooperative: bool = True
    steps: int = 10
    #: A file the processor writes (its pid) when it stops on a cancel it saw itself: proof
    #: that it ended by its own cleanup, not by the supervisor's kill after the grace period.
    cleanup: str = ""


@processor("sleep", options=SleepOptions, description="Sleep, reporting progress")
def sleep(ctx: Context) -> dict[str, float]:
    opts: SleepOptions = ctx.options
    for i in range(opts.steps):
        if opts.cooperative and ctx.cancelled():
            if opts.cleanup:
                Path(opts.cleanup).write_text(f"{os.getpid()}\n")
            raise ProcessorError("cancelled", "stopped on request")
        time.sleep(opts.seconds / opts.steps)
        ctx.progress((i + 1) / opts.steps, f"step {i + 1}/{opts.steps}")
    return {"slept": opts.seconds}


class CountOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: int = 200


@processor("progress", options=CountOptions, description="Emit many progress events")
def many_progress(ctx: Context) -> dict[str, int]:
    opts: CountOptions = ctx.options
    for i in range(opts.events):
        ctx.progress((i + 1) / opts.events, f"{i + 1}/{opts.events}")
    return {"events": opts.events}


@processor("abort", description="Kill the worker process every time")
def abort(ctx: Context) -> None:
    os.abort()


class AllocOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    megabytes: int = 4096


@processor("alloc", options=AllocOptions, description="Allocate a lot of memory")
def alloc(ctx: Context) -> int:
    opts: AllocOptions = ctx.options
    blob = bytearray(opts.megabytes * 1024 * 1024)
    return len(blob)


@processor("fail", description="Fail with a non-retryable error")
def fail(ctx: Context) -> None:
    raise ProcessorError("bad_input", "this file is refused on purpose")


class MarkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Sleep this long before finishing, so a test can kill the worker mid-job.
    seconds: float = 0.0
    #: Directory where each attempt drops a marker file, to count executions.
    marks: str = ""


@processor("mark", options=MarkOptions, description="Write an artifact and record each run")
def mark(ctx: Context) -> dict[str, int]:
    opts: MarkOptions = ctx.options
    if opts.marks:
        Path(opts.marks, f"{ctx.job_id}-{ctx.attempt}-{os.getpid()}").touch()
    with ctx.artifact("attempt.txt", "text/plain") as out:
        out.write(f"attempt {ctx.attempt}\n".encode())
    deadline = time.monotonic() + opts.seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {"attempt": ctx.attempt}


class TouchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    megabytes: int = 600
    hold_s: float = 10.0


@processor("alloc_touch", options=TouchOptions, description="Fill memory, then hold it")
def alloc_touch(ctx: Context) -> int:
    opts: TouchOptions = ctx.options
    blob = bytearray(b"\x01" * (opts.megabytes * 1024 * 1024))
    time.sleep(opts.hold_s)
    return len(blob)


@processor("badname", description="Write an artifact under a name the rule refuses")
def badname(ctx: Context) -> None:
    with ctx.artifact("my file.txt", "text/plain") as out:
        out.write(b"spaces are not allowed in artifact names")


@processor("crash", description="Raise an unexpected exception with a multi-line message")
def crash(ctx: Context) -> None:
    raise RuntimeError(f"boom in {ctx.work_dir / 'secret' / 'file.bin'}\nsecond line\nthird")

class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "echo.bin"
    media_type: str = "application/octet-stream"


@processor("echo", options=EchoOptions, description="Copy the input file into one artifact")
def echo(ctx: Context) -> dict[str, int]:
    opts: EchoOptions = ctx.options
    data = ctx.input_path.read_bytes()
    with ctx.artifact(opts.name, opts.media_type) as out:
        out.write(data)
    return {"bytes": len(data)}


class FillOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    megabytes: int = 12
    #: Wait until this file exists before writing (a test fills a disk meanwhile).
    gate: str = ""


@processor("fill", options=FillOptions, description="Wait for a gate file, then write MiBs")
def fill(ctx: Context) -> dict[str, int]:
    opts: FillOptions = ctx.options
    deadline = time.monotonic() + 120
    while opts.gate and not Path(opts.gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with ctx.artifact("big.bin", "application/octet-stream") as out:
        for _ in range(opts.megabytes):
            out.write(b"\1" * 1024 * 1024)
    return {"megabytes": opts.megabytes}


class GateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Fail (not retryable) while this file is missing; once it exists, wait for
    #: ``<path>.go`` before succeeding, so a test can hold a retried run open.
    path: str


@processor("gate", options=GateOptions, description="Fail until a file exists, then wait for a go")
def gate(ctx: Context) -> dict[str, int]:
    opts: GateOptions = ctx.options
    if not Path(opts.path).exists():
        raise ProcessorError("gate_closed", "the gate file is missing")
    go = Path(opts.path + ".go")
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline and not ctx.cancelled():
        time.sleep(0.05)
    return {"attempt": ctx.attempt}


@processor("words", description="Count the words of a text file", accepts=["text/*"])
def words(ctx: Context) -> dict[str, int]:
    # Reads bytes as text: given a JPEG it would "count" garbage, hence accepts=["text/*"].
    return {"words": len(Path(ctx.input_path).read_text(errors="replace").split())}


@processor("nonfinite", description="Report NaN progress and return NaN and infinities")
def nonfinite(ctx: Context) -> dict[str, object]:
    ctx.progress(float("nan"), "not a number")
    return {"nan": float("nan"), "inf": [float("inf"), -float("inf")], "ok": 1.5}
