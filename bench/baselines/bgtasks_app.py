"""Baseline 1: the FastAPI ``BackgroundTasks`` tutorial pattern.

The upload is read whole into memory (``await file.read()``) and the job runs in the same
process after the response, in Starlette's thread pool. ``GET /status/{id}`` and the in-memory
``JOBS`` dict are a courtesy to the harness (so it can tell when all jobs are done): the real
pattern has no way to ask. Run: ``uvicorn bench.baselines.bgtasks_app:app``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated

from fastapi import BackgroundTasks, FastAPI, File, Form, HTTPException, UploadFile

from bench.baselines.renditions import make_renditions

app = FastAPI(title="bgtasks baseline")
JOBS: dict[str, str] = {}


def noop(content: bytes, job_id: str) -> None:
    """The no-op job: holds the bytes until it runs, like any task given ``content``."""


def tracked(fn: Callable[[bytes, str], object], content: bytes, job_id: str) -> None:
    JOBS[job_id] = "running"
    try:
        fn(content, job_id)
    except Exception:
        JOBS[job_id] = "failed"
        raise
    JOBS[job_id] = "succeeded"


@app.post("/upload")
async def upload(
    background_tasks: BackgroundTasks,
    file: Annotated[UploadFile, File()],
    pipeline: Annotated[str, Form()] = "image",
) -> dict[str, str]:
    content = await file.read()
    job_id = uuid.uuid4().hex
    JOBS[job_id] = "queued"
    fn = noop if pipeline == "noop" else make_renditions
    background_tasks.add_task(tracked, fn, content, job_id)
    return {"id": job_id}


@app.get("/status/{job_id}")
def status(job_id: str) -> dict[str, str]:
    if job_id not in JOBS:
        raise HTTPException(404, "not found")
    return {"id": job_id, "state": JOBS[job_id]}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
