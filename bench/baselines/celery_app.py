"""Baseline 2: FastAPI + Celery 5 with Redis as broker and result backend.

The upload endpoint copies the ``UploadFile`` to disk with ``shutil.copyfileobj`` and queues
``task.delay(path)``; the status endpoint reads ``AsyncResult``. Run both halves:

    uvicorn bench.baselines.celery_app:api
    celery -A bench.baselines.celery_app worker --pool=prefork --concurrency=2

``BENCH_REDIS_URL`` picks the Redis database and ``BENCH_CELERY_QUEUE`` the queue name, so
that a run never consumes another run's leftover messages.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Annotated

from celery import Celery, Task
from celery.result import AsyncResult
from fastapi import FastAPI, File, Form, UploadFile

from bench.baselines.renditions import make_renditions, out_dir

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")

app = Celery("bench_celery", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_reject_on_worker_lost=True,
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "bench-celery"),
    result_expires=900,
    broker_connection_retry_on_startup=True,
)


@app.task(bind=True, name="bench.renditions")  # type: ignore[untyped-decorator]
def renditions(self: Task, path: str) -> list[tuple[int, int]]:
    return make_renditions(Path(path), str(self.request.id))


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(path: str) -> None:
    """The no-op job."""


api = FastAPI(title="celery baseline")


@api.post("/upload")
async def upload(
    file: Annotated[UploadFile, File()],
    pipeline: Annotated[str, Form()] = "image",
) -> dict[str, str]:
    path = out_dir("uploads") / f"{uuid.uuid4().hex}-{Path(file.filename or 'upload').name}"
    with path.open("wb") as buffer:
        shutil.copyfileobj(file.file, buffer)
    task = noop if pipeline == "noop" else renditions
    result = task.delay(str(path))
    return {"id": result.id}


_STATES = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "cancelled"}


@api.get("/status/{job_id}")
def status(job_id: str) -> dict[str, str]:
    state = AsyncResult(job_id, app=app).state
    return {"id": job_id, "state": _STATES.get(state, state.lower())}


@api.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
