"""Pipelines, health, readiness and Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from conveyor import __version__
from conveyor.api.room import free_space, short_of_room
from conveyor.api.services import Services, services
from conveyor.api.views import PipelineOut
from conveyor.auth import CanRead, IsAdmin
from conveyor.dispatch.status import metric_gauges, scaleout_status
from conveyor.errors import InsufficientStorage
from conveyor.problems import Problem, problem_schema
from conveyor.storage import StorageError
from conveyor.telemetry.metrics import LiveCollector, exposition

router = APIRouter(tags=["system"])
Svc = Annotated[Services, Depends(services)]


@router.get("/v1/pipelines", response_model=list[PipelineOut], summary="List pipelines")
async def pipelines(svc: Svc, _caller: CanRead) -> list[dict[str, Any]]:
    return svc.registry.describe()


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses={503: problem_schema()},
            summary="Database and storage reachable, workers running, not draining")
async def readyz(svc: Svc) -> dict[str, Any]:
    svc.drain.refuse("send traffic")  # 503 draining from the first moment of a drain
    checks: dict[str, Any] = {}
    try:
        await to_thread.run_sync(svc.store.ping)
        checks["database"] = "ok"
    except Exception as exc:
        raise Problem(503, "not_ready", f"database unreachable: {type(exc).__name__}") from None
    try:
        await svc.storage.ping()
        checks["storage"] = "ok"
    except (OSError, InsufficientStorage, StorageError) as exc:
        raise Problem(503, "not_ready", f"storage unusable: {exc}") from None
    free = await free_space(svc)
    checks["free_bytes"] = free
    short = short_of_room(free, svc.settings.min_free_bytes)
    if short is not None:
        raise Problem(503, "not_ready", short, checks=checks)
    scaleout = await to_thread.run_sync(scaleout_status, svc.settings, svc.store)
    if scaleout is not None:
        checks.update(scaleout)  # shown, not gating: uploads are accepted without a broker
    elif svc.supervisor is not None:
        alive = svc.supervisor.alive_workers()
        checks["workers"] = alive
        outage = svc.supervisor.outage()
        if outage is not None:
            raise Problem(503, "not_ready", f"the supervisor cannot work: {outage}",
                          checks=checks)
        restarting = svc.supervisor.restart_backoff()
        if restarting is not None:
            checks["workers_restarting"] = restarting
        if alive == 0 and svc.supervisor.count > 0:
            raise Problem(503, "not_ready", restarting or "no worker process is running",
                          checks=checks)
    else:
        checks["workers"] = "external"
    return {"status": "ready", "checks": checks}


_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text exposition"}})
async def metrics(svc: Svc, _caller: IsAdmin) -> Response:
    counts = await to_thread.run_sync(svc.store.jobs.count_by_state)

    def live() -> Iterator[tuple[str, str, dict[str, float]]]:
        yield ("conveyor_jobs", "Jobs by state (from the database).",
               {state: float(counts.get(state, 0)) for state in _STATES})
        yield "conveyor_event_subscribers", "Open SSE streams.", {"": svc.hub.subscribers}
        alive = svc.supervisor.alive_workers() if svc.supervisor else 0
        yield "conveyor_workers_alive", "Embedded worker processes alive.", {"": alive}
        yield ("conveyor_uptime_seconds", "Seconds since the server started.",
               {"": time.time() - svc.started_at})
        yield ("conveyor_draining", "1 while the server drains after SIGTERM, else 0.",
               {"": 1.0 if svc.drain.draining else 0.0})
        yield ("conveyor_uploads_in_flight", "Uploads being received now.",
               {"": svc.drain.uploads})
        yield from metric_gauges(scaleout)

    scaleout = await to_thread.run_sync(scaleout_status, svc.settings, svc.store)
    body = await to_thread.run_sync(exposition, LiveCollector(live))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
