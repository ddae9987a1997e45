"""The worker's running-job slot, shared with its supervisor (runner/status.py)."""

from __future__ import annotations

import multiprocessing
import time

from conveyor.runner.status import RunningSlot


def _worker(slot: RunningSlot) -> None:
    slot.begin("01JOB", "tok", 12.5, "image")


def test_a_slot_written_in_another_process_reads_back() -> None:
    ctx = multiprocessing.get_context("forkserver")
    slot = RunningSlot(ctx)
    assert slot.read() == (None, 0)
    before = time.monotonic()
    proc = ctx.Process(target=_worker, args=(slot,))
    proc.start()
    proc.join(30)
    running, ended = slot.read()
    assert running is not None and ended == 0
    assert (running.job_id, running.token, running.pipeline, running.timeout_s) == (
        "01JOB", "tok", "image", 12.5)
    assert before <= running.started <= time.monotonic()  # one clock for every process
    slot.end()
    assert slot.read() == (None, 1)


def test_a_slot_left_mid_write_is_read_as_it_is() -> None:
    slot = RunningSlot(multiprocessing.get_context("forkserver"))
    slot.begin("01JOB", "tok", 1.0, "noop")
    slot._raw.seq += 1  # a writer killed between its two increments
    running, _ = slot.read()  # returns, does not spin for ever
    assert running is not None and running.job_id == "01JOB"
