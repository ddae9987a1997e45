"""Guarantees 2-4 with real worker processes: crashes, poison files, caps, cancellation."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conveyor.storage import artifacts_prefix
from tests.engine.conftest import Engine


def _running(engine: Engine, job_id: str, timeout: float = 30) -> None:
    engine.wait(job_id, ("running",), timeout)


def _events(engine: Engine, job_id: str) -> list[str]:
    return [e.type for e in engine.store.events.after(0, job_id=job_id)]


def _started_by(engine: Engine) -> list[str]:
    """The ``worker`` of every ``job.started`` event, oldest first."""
    workers: list[str] = []
    after = 0
    while batch := engine.store.events.after(after, limit=500):
        workers += [e.data["worker"] for e in batch if e.type == "job.started"]
        after = batch[-1].id
    return workers


def test_sigkilled_worker_process_job_succeeds_on_next_attempt(engine: Engine) -> None:
    job_id = engine.add("mark", {"seconds": 2})
    proc = engine.worker(workers=1)
    _running(engine, job_id)
    time.sleep(0.3)  # the processor has written its artifact into the attempt's work dir
    (pid,) = engine.worker_pids(proc)
    os.kill(pid, signal.SIGKILL)
    job = engine.wait(job_id)
    assert job.state.value == "succeeded", job.error
    assert job.attempts == 2
    assert [a.name for a in job.artifacts] == ["attempt.txt"]
    assert engine.storage.read_bytes(job.artifacts[0].storage_key) == b"attempt 2\n"
    # Nothing of the killed attempt survives in storage.
    assert len(engine.storage.keys(artifacts_prefix(job_id))) == 1
    assert "job.retrying" in _events(engine, job_id)


def test_sigkill_whole_worker_then_restart_finishes_all_exactly_once(
    engine: Engine, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    ids = [engine.add("mark", {"seconds": 0.3, "marks": str(marks)}) for _ in range(50)]
    first = engine.worker(workers=2)
    deadline = time.monotonic() + 30
    counts = engine.store.jobs.count_by_state
    while time.monotonic() < deadline and counts().get("succeeded", 0) < 5:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    counts = engine.store.jobs.count_by_state()
    assert counts.get("succeeded", 0) < 50, "the kill came too late to test anything"
    engine.burst(workers=2)
    for job_id in ids:
        job = engine.store.jobs.get(job_id)
        assert job is not None and job.state.value == "succeeded", (job_id, job and job.error)
        assert _events(engine, job_id).count("job.succeeded") == 1
    # Every job left at least one mark; jobs killed mid-run may have two (at-least-once).
    runs = {name.split("-")[0] for name in os.listdir(marks)}
    assert runs == set(ids)


def test_processor_that_aborts_ends_failed_worker_lost_and_others_flow(engine: Engine) -> None:
    poison = engine.add("abort", max_attempts=3)
    good = [engine.add("noop") for _ in range(10)]
    engine.burst(workers=2)
    job = engine.store.jobs.get(poison)
    assert job is not None and job.state.value == "failed"
    assert job.error is not None and job.error.code == "worker_lost"
    assert job.attempts == 3
    for job_id in good:
        assert engine.store.jobs.get(job_id).state.value == "succeeded"  # type: ignore[union-attr]


def test_memory_cap_fails_job_with_memory_exceeded(engine: Engine) -> None:
    job_id = engine.add("alloc", {"megabytes": 3072})
    after = engine.add("noop")
    engine.burst(workers=1, CONVEYOR_WORKER_MEMORY_MB="1024", CONVEYOR_WORKER_RSS_MB="0")
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.state.value == "failed"
    assert job.error is not None and job.error.code == "memory_exceeded"
    assert engine.store.jobs.get(after).state.value == "succeeded"  # type: ignore[union-attr]


def test_rss_cap_kills_worker_with_memory_exceeded(engine: Engine) -> None:
    # No address-space cap here: the supervisor's RSS watch must catch it.
    job_id = engine.add("alloc_touch", {"megabytes": 600, "hold_s": 10})
    engine.burst(workers=1, CONVEYOR_WORKER_MEMORY_MB="0", CONVEYOR_WORKER_RSS_MB="300")
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.state.value == "failed", job
    assert job.error is not None and job.error.code == "memory_exceeded"


def test_timeout_stops_job_within_timeout_plus_a_few_seconds(engine: Engine) -> None:
    job_id = engine.add("sleep", {"seconds": 60, "cooperative": False}, timeout_s=2)
    engine.worker(workers=1)
    _running(engine, job_id)
    started = time.monotonic()
    job = engine.wait(job_id, timeout=30)
    elapsed = time.monotonic() - started
    assert job.state.value == "failed"
    assert job.error.code == "timeout"
    assert elapsed < 2 + 4, elapsed


def test_cancel_queued_and_running_jobs(engine: Engine) -> None:
    running = engine.add("sleep", {"seconds": 60, "cooperative": False}, priority=10)
    queued = engine.add("noop")
    engine.worker(workers=1)
    _running(engine, running)
    assert engine.store.jobs.request_cancel(queued).value == "cancelled"
    assert engine.store.jobs.request_cancel(running).value == "running"  # stopping
    job = engine.wait(running, timeout=20)
    assert job.state.value == "cancelled"
    assert engine.store.jobs.get(queued).state.value == "cancelled"  # type: ignore[union-attr]
    # The work stopped: no progress event after the cancellation settled.
    events = _events(engine, running)
    assert events[-1] == "job.cancelled"
    time.sleep(1.5)
    assert _events(engine, running) == events


def test_cooperative_cancel_stops_quickly(engine: Engine, tmp_path: Path) -> None:
    cleanup = tmp_path / "cleanup"
    job_id = engine.add("sleep", {"seconds": 60, "steps": 600, "cleanup": str(cleanup)})
    proc = engine.worker(workers=1)
    _running(engine, job_id)
    (pid,) = engine.worker_pids(proc)
    engine.store.jobs.request_cancel(job_id)
    started = time.monotonic()
    job = engine.wait(job_id, timeout=20)
    assert job.state.value == "cancelled"
    assert time.monotonic() - started < 3
    # The processor saw the cancel and ran its own cleanup (a forced kill after the 1 s grace
    # period would also meet the bound above) ...
    assert cleanup.is_file(), f"the processor did not stop by itself:\n{engine.logs()}"
    assert cleanup.read_text() == f"{pid}\n"
    # ... and no kill came: the same worker process is alive, not a replacement.
    assert engine.worker_pids(proc) == [pid]


def test_two_worker_commands_never_run_an_attempt_twice(engine: Engine, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    ids = [engine.add("mark", {"marks": str(marks)}) for _ in range(300)]
    a = engine.worker("--burst", workers=2)
    b = engine.worker("--burst", workers=2)
    for proc in (a, b):
        proc.wait(120)
        assert proc.returncode == 0, engine.logs()
    names = os.listdir(marks)
    runs = [name.rsplit("-", 1)[0] for name in names]  # "<job>-<attempt>"
    assert len(runs) == len(set(runs)) == 300
    assert {r.split("-")[0] for r in runs} == set(ids)
    pids = {name.rsplit("-", 1)[1] for name in names}
    assert len(pids) >= 2
    # Both commands did work: every attempt's job.started event names its worker
    # "<node>-<supervisor pid>-w<n>-<generation>" (the node name may hold dashes).
    supervisors: dict[int, int] = {}
    for worker in _started_by(engine):
        pid = int(worker.rsplit("-", 3)[1])
        supervisors[pid] = supervisors.get(pid, 0) + 1
    assert sum(supervisors.values()) == 300
    assert set(supervisors) == {a.pid, b.pid}, supervisors


def test_sigterm_releases_running_job_to_another_worker(engine: Engine) -> None:
    job_id = engine.add("sleep", {"seconds": 30, "cooperative": False})
    proc = engine.worker(workers=1, CONVEYOR_SHUTDOWN_GRACE_S="1")
    _running(engine, job_id)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(20)
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.state.value == "queued"
    assert job.attempts == 0  # a released attempt does not count
