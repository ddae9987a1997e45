"""What a worker runs, in memory shared with its supervisor: no message per job.

A worker writes the job it starts (id, lease token, time-out, pipeline, monotonic start time)
into its :class:`RunningSlot` and clears it when the attempt is recorded; the supervisor reads
the slot on every tick (a few times a second) to renew leases, enforce time-outs and, when the
worker dies, fail the attempt it was running. Short jobs used to cost two pipe messages each,
and each woke the supervisor; now a job costs two writes to shared memory and the supervisor
wakes on its own clock.

The slot is a seqlock: the writer makes ``seq`` odd, writes the fields, then makes it even; a
reader retries while ``seq`` is odd or changed under it. There is one writer per slot (its
worker), so no lock is needed. ``time.monotonic`` is ``CLOCK_MONOTONIC``, the same clock in
every process of the machine.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

_ID = 40
_TOKEN = 40
_PIPELINE = 96
#: Reads of a slot that is being written before taking it as it is (see RunningSlot.read).
_TRIES = 200


class _Fields(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("job_id", ctypes.c_char * _ID),
        ("token", ctypes.c_char * _TOKEN),
        ("pipeline", ctypes.c_char * _PIPELINE),
        ("timeout_s", ctypes.c_double),
        ("started", ctypes.c_double),
        #: Attempts this worker ended (for the supervisor's "stable worker" rule).
        ("ended", ctypes.c_uint64),
    ]


@dataclass(frozen=True, slots=True)
class Running:
    """One consistent reading of a slot that holds a job."""

    job_id: str
    token: str
    pipeline: str
    timeout_s: float
    started: float


class RunningSlot:
    """One worker's slot (made by the supervisor, handed to the worker when it starts)."""

    def __init__(self, ctx: BaseContext) -> None:
        self._raw: Any = ctx.RawValue(_Fields)

    # -- the worker ------------------------------------------------------------------------

    def begin(self, job_id: str, token: str, timeout_s: float, pipeline: str) -> None:
        raw = self._raw
        raw.seq += 1
        raw.job_id = job_id.encode()[:_ID]
        raw.token = token.encode()[:_TOKEN]
        raw.pipeline = pipeline.encode()[: _PIPELINE - 1]
        raw.timeout_s = float(timeout_s)
        raw.started = time.monotonic()
        raw.seq += 1

    def end(self) -> None:
        raw = self._raw
        raw.seq += 1
        raw.job_id = b""
        raw.token = b""
        raw.ended += 1
        raw.seq += 1

    # -- the supervisor --------------------------------------------------------------------

    def read(self) -> tuple[Running | None, int]:
        """The running job (None when idle) and the count of ended attempts.

        A worker killed in the middle of a write leaves ``seq`` odd for good: after a few
        tries the fields are taken as they are. At worst they pair a job with a stale token,
        and then the attempt is not failed here but requeued when its lease runs out.
        """
        raw = self._raw
        for _ in range(_TRIES):
            before = raw.seq
            if before & 1:
                time.sleep(0)  # the worker is mid-write: let it finish
                continue
            job_id, token = raw.job_id, raw.token
            pipeline, timeout_s, started, ended = (raw.pipeline, raw.timeout_s, raw.started,
                                                   raw.ended)
            if raw.seq == before:
                break
        else:
            job_id, token = raw.job_id, raw.token
            pipeline, timeout_s, started, ended = (raw.pipeline, raw.timeout_s, raw.started,
                                                   raw.ended)
        if not job_id:
            return None, int(ended)
        return Running(job_id.decode(), token.decode(), pipeline.decode(errors="replace"),
                       float(timeout_s), float(started)), int(ended)
