"""Pipelines, health, readiness and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from conveyor import __version__
from conveyor.api.services import Services, services
from conveyor.api.views import PipelineOut
from conveyor.dispatch.status import metric_lines, scaleout_status
from conveyor.problems import Problem, problem_schema

router = APIRouter(tags=["system"])
Svc = Annotated[Services, Depends(services)]


@router.get("/v1/pipelines", response_model=list[PipelineOut], summary="List pipelines")
async def pipelines(svc: Svc) -> list[dict[str, Any]]:
    return svc.registry.describe()


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses={503: problem_schema()},
            summary="Database and storage reachable, workers running")
async def readyz(svc: Svc) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    try:
        await to_thread.run_sync(svc.store.ping)
        checks["database"] = "ok"
    except Exception as exc:
        raise Problem(503, "not_ready", f"database unreachable: {type(exc).__name__}") from None
    try:
        await svc.storage.ping()
        checks["storage"] = "ok"
    except OSError as exc:
        raise Problem(503, "not_ready", f"storage unusable: {exc}") from None
    scaleout = await to_thread.run_sync(scaleout_status, svc.settings, svc.store)
    if scaleout is not None:
        checks.update(scaleout)  # shown, not gating: uploads are accepted without a broker
    elif svc.supervisor is not None:
        alive = svc.supervisor.alive_workers()
        checks["workers"] = alive
        if alive == 0 and svc.supervisor.count > 0:
            raise Problem(503, "not_ready", "no worker process is running")
    else:
        checks["workers"] = "external"
    return {"status": "ready", "checks": checks}


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def metrics(svc: Svc) -> str:
    counts = await to_thread.run_sync(svc.store.jobs.count_by_state)
    lines = [
        "# HELP conveyor_jobs Jobs by state.",
        "# TYPE conveyor_jobs gauge",
    ]
    for state in ("queued", "running", "succeeded", "failed", "cancelled"):
        lines.append(f'conveyor_jobs{{state="{state}"}} {counts.get(state, 0)}')
    lines += [
        "# HELP conveyor_event_subscribers Open SSE streams.",
        "# TYPE conveyor_event_subscribers gauge",
        f"conveyor_event_subscribers {svc.hub.subscribers}",
        "# HELP conveyor_workers_alive Embedded worker processes alive.",
        "# TYPE conveyor_workers_alive gauge",
        f"conveyor_workers_alive "
        f"{svc.supervisor.alive_workers() if svc.supervisor else 0}",
        "# HELP conveyor_uptime_seconds Seconds since the server started.",
        "# TYPE conveyor_uptime_seconds gauge",
        f"conveyor_uptime_seconds {time.time() - svc.started_at:.1f}",
    ]
    lines += metric_lines(await to_thread.run_sync(scaleout_status, svc.settings, svc.store))
    for name, value in sorted(svc.counters.items()):
        lines += [f"# TYPE conveyor_{name}_total counter", f"conveyor_{name}_total {value:g}"]
    return "\n".join(lines) + "\n"
