"""Live events over SSE: replay from the database, then the hub's live feed, and the routes.

The hub itself (tailing, fan-out, encoding) is :mod:`conveyor.api.hub`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from conveyor.api.event_stream import EventStreamResponse
from conveyor.api.hub import format_event
from conveyor.api.protocol import connection_control
from conveyor.api.services import Services, services
from conveyor.auth import CanRead
from conveyor.auth.caller import EVERY_TENANT, TENANT_DOC
from conveyor.errors import BadEventId
from conveyor.models import JobState
from conveyor.problems import problem_schema
from conveyor.telemetry import metrics


async def stream_events(
    request: Request, svc: Services, job_id: str | None, last_event_id: int | None,
    tenant: str | None = None,
) -> AsyncIterator[bytes]:
    """``tenant``: the global stream (``job_id`` None) carries only this tenant's events
    (:data:`~conveyor.auth.caller.EVERY_TENANT`: every tenant's)."""
    hub = svc.hub
    # Subscribe before the replay so nothing committed in between is missed; the seam is
    # de-duplicated by event id.
    sub = hub.subscribe(job_id, tenant)
    try:
        sent = last_event_id if last_event_id is not None else (0 if job_id else hub.last_id)
        yield b"retry: 2000\n\n"
        if job_id is not None or last_event_id is not None:
            while True:
                batch = await to_thread.run_sync(
                    partial(svc.store.events.after, sent, job_id=job_id, limit=500)
                )
                chunks = []
                for old in batch:
                    sent = old.id
                    if job_id is None and tenant not in (old.tenant_id, EVERY_TENANT):
                        continue  # another tenant's event
                    chunks.append(format_event(old))
                # A replayed terminal event ends nothing by itself: a retried job has one per
                # run, so the end is decided below from the job's current state.
                if chunks:
                    yield b"".join(chunks)
                if len(batch) < 500:
                    break
            if job_id is not None and await to_thread.run_sync(_ended, svc, job_id):
                # Resumed after the job's terminal event: nothing more will come (API.md).
                # Read once more: the job may have ended since the replay's last read.
                tail = await to_thread.run_sync(
                    partial(svc.store.events.after, sent, job_id=job_id, limit=500)
                )
                if tail:
                    yield b"".join(format_event(old) for old in tail)
                return
        control = connection_control(request.scope)
        while True:
            if control is not None:
                # Caught up: the hub writes the live events to this socket itself, until the
                # stream ends or falls behind (then its queue takes over again).
                woken = sub.go_direct(control, sent)
                if woken is not None:
                    try:
                        over = await woken
                    finally:
                        sub.leave_direct()
                    sent = sub.sent
                    if over:
                        return
            # Take everything that is waiting and send it as one write.
            items = [await sub.queue.get()]
            while not sub.queue.empty():
                items.append(sub.queue.get_nowait())
            out: list[bytes] = []
            for item in items:
                if item is None:
                    if out:
                        yield b"".join(out)
                    return
                if isinstance(item, bytes):
                    out.append(item)
                    continue
                if item.id <= sent:
                    continue
                sent = item.id
                out.append(item.data)
                if job_id is not None and item.terminal:
                    yield b"".join(out)
                    return
            if out:
                yield b"".join(out)
    finally:
        hub.unsubscribe(sub)


def _ended(svc: Services, job_id: str) -> bool:
    job = svc.store.jobs.get(job_id)
    return job is None or JobState(job.state).terminal


router = APIRouter(prefix="/v1", tags=["events"])
Svc = Annotated[Services, Depends(services)]

#: Event ids are SQL BIGINTs: a larger number could not even be compared in the database.
MAX_EVENT_ID = 2**63 - 1

_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
    400: problem_schema(),
    401: problem_schema(),
    403: problem_schema(),
    404: problem_schema(),
    410: problem_schema(),
    503: problem_schema(),
}
_AFTER_DOC = "Same as Last-Event-ID, for clients (like EventSource) that cannot set the header"


def start_after(last_event_id: str | None, after: int | None) -> int | None:
    """The id to resume after: ``Last-Event-ID`` wins over ``after``; None means no resume.

    A ``Last-Event-ID`` that is not a number is ignored (it may come from another server's
    stream); a number outside 0..2**63-1, in either, raises :class:`BadEventId`.
    """
    header = last_event_id.strip() if last_event_id is not None else ""
    start = None
    if header.isascii() and header.isdigit():
        digits = header.lstrip("0") or "0"
        # Over 19 digits is past 2**63-1 (and int() refuses over 4,300): out of range.
        start = int(digits) if len(digits) <= 19 else MAX_EVENT_ID + 1
    if start is None:
        start = after
    if start is not None and not 0 <= start <= MAX_EVENT_ID:
        raise BadEventId(f"event ids run from 0 to {MAX_EVENT_ID}; got {start}")
    return start


def _sse(svc: Services, gen: AsyncIterator[bytes]) -> StreamingResponse:
    return EventStreamResponse(gen, send_timeout_s=svc.settings.event_send_timeout_s,
                               on_stalled=metrics.EVENT_STREAMS_STALLED.inc)


# ``le`` is stated in the schema only: FastAPI would answer a larger ``after`` 422, and the
# contract wants 400 bad_event_id as for the header.
_After = Annotated[int | None, Query(ge=0, description=_AFTER_DOC,
                                     json_schema_extra={"maximum": MAX_EVENT_ID})]


@router.get("/jobs/{job_id}/events", responses=_SSE_DOC, response_class=StreamingResponse,
            summary="Follow one job's events (SSE)")
async def job_events(
    job_id: str,
    request: Request,
    svc: Svc,
    caller: CanRead,
    last_event_id: Annotated[str | None, Header()] = None,
    after: _After = None,
) -> StreamingResponse:
    svc.drain.refuse("follow events")
    start = start_after(last_event_id, after)
    await to_thread.run_sync(svc.load_job, job_id, caller)
    return _sse(svc, stream_events(request, svc, job_id, start))


@router.get("/events", responses=_SSE_DOC, response_class=StreamingResponse,
            summary="Follow every job's events of the caller's tenant (SSE)")
async def all_events(
    request: Request,
    svc: Svc,
    caller: CanRead,
    last_event_id: Annotated[str | None, Header()] = None,
    after: _After = None,
    tenant: Annotated[str | None, Query(max_length=64, description=TENANT_DOC)] = None,
) -> StreamingResponse:
    shown = caller.tenant_filter(tenant)
    svc.drain.refuse("follow events")
    start = start_after(last_event_id, after)
    return _sse(svc, stream_events(request, svc, None, start,
                                   EVERY_TENANT if shown is None else shown))
