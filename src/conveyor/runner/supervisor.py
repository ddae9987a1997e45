"""The supervisor: starts N long-lived worker processes and watches them from outside.

It restarts a worker that dies, recycles one after N jobs or above its RSS cap, renews the
lease of every running job (so a worker busy in native code still holds its lease), kills the
worker whose job passed its timeout or was cancelled and did not stop within the grace period,
and records why (``timeout``, ``cancelled``, ``worker_lost``, ``memory_exceeded``). Its reaper
requeues jobs whose lease expired: that is how the jobs of a SIGKILLed supervisor, or of a
crashed machine, still get done.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

import psutil
from sqlalchemy.exc import SQLAlchemyError

from conveyor.errors import InsufficientStorage, LeaseLost
from conveyor.models import ErrorCode, JobError, JobState
from conveyor.runner.restarts import STABLE_S, Restarts
from conveyor.runner.retry import RetryPolicy
from conveyor.runner.status import RunningSlot
from conveyor.runner.watchdog import (
    Watched,
    WatchLimits,
    decide,
    heartbeat_interval,
    reap_interval,
)
from conveyor.runner.worker import worker_main
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.telemetry import multiproc
from conveyor.telemetry.metrics import RUN_SECONDS

log = logging.getLogger("conveyor.supervisor")

#: Workers are forked from a fork server that imported the worker's code once: a new or
#: recycled worker starts in milliseconds instead of re-importing for a second or more (which,
#: with recycling every ``jobs_per_worker`` jobs, cost short jobs half their throughput). The
#: fork server is a fresh single-threaded process (not a fork of this one, whose threads and
#: connections would be copied), and exits when this process is gone, which kills its workers.
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["conveyor.runner.forkserver"])
#: What the store raises while its database is unreachable or its disk is full: expected in
#: an outage, logged in one line, never a traceback per tick.
OUTAGE = (InsufficientStorage, SQLAlchemyError)
#: Least time between two log lines about the same ongoing outage.
OUTAGE_LOG_S = 60.0
#: Least time between two "is the queue empty?" counts in burst mode.
DRAIN_CHECK_S = 0.25


@dataclass(slots=True)
class Slot:
    index: int
    process: BaseProcess
    pipe: Connection
    worker_id: str
    #: What the worker runs, as it wrote it (read on every tick).
    status: RunningSlot
    running: Watched | None = None
    jobs: int = 0
    kill_reason: JobError | None = None
    retiring: bool = False
    started: float = 0.0
    #: Why the worker said it is exiting (sent over the pipe before it exits).
    fatal: str | None = None
    #: The pipeline of the running job (a metric label).
    pipeline: str = ""


class Supervisor:
    def __init__(self, settings: Settings, *, workers: int | None = None, burst: bool = False,
                 name: str | None = None) -> None:
        self.settings = settings
        self.count = settings.workers if workers is None else workers
        self.burst = burst
        self.name = name or f"{os.uname().nodename}-{os.getpid()}"
        self.store = Store(
            settings.db_url,
            run_dir=settings.run_dir,
            retention_s=settings.retention.total_seconds(),
            default_webhook_url=settings.webhook_url,
        )
        self.policy = RetryPolicy(settings.retry_base_s, settings.retry_max_s)
        self.limits = WatchLimits.of(settings.cancel_grace_s, settings.worker_rss_mb)
        self.slots: list[Slot] = []
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._generation = 0
        self._settings_json = settings.model_dump_json()
        self._last_heartbeat = 0.0
        self._last_reap = 0.0
        self._last_drain_check = 0.0
        self.restarts = Restarts()
        self._outage: str | None = None
        self._outage_logged = 0.0
        #: Workers not forked yet at start-up (see alive_workers).
        self._forking = self.count
        # The fork server imports the worker's code while the rest of start-up goes on.
        forkserver.ensure_running()

    # -- public --------------------------------------------------------------------------

    def run(self) -> None:
        """Run until :meth:`stop` (or, in burst mode, until no job is queued or running)."""
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self._clean_stale_work_dirs()
        self.store.maintenance.reap_expired_leases(self.policy)
        try:
            for index in range(self.count):
                self.slots.append(self._spawn(index))
                self._forking -= 1
            while not self._stop.is_set():
                try:
                    self._tick()
                    if self._outage is not None:
                        log.warning("supervisor recovered (%s)", self._outage)
                        self._outage = None
                    if self.burst and self._drained():
                        break
                except Exception as exc:
                    # A database hiccup must not take the supervisor (and its workers) down:
                    # leases outlive a short outage, and the next tick tries again.
                    self._log_outage(exc)
                    time.sleep(1.0)
        finally:
            self._forking = 0
            self._shutdown()
            self.store.close()
            self._stopped.set()

    def stop(self) -> None:
        self._stop.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def alive_workers(self) -> int:
        """Worker processes alive, or being forked (the first waits for the fork server)."""
        return sum(1 for s in self.slots if s.process.is_alive()) + self._forking

    def outage(self) -> str | None:
        """Why the supervisor's last tick failed (the database cannot be written...), or None."""
        return self._outage

    def restart_backoff(self) -> str | None:
        """Why some workers are not running (crashed and backing off), or None."""
        return self.restarts.describe(time.monotonic())

    def _log_outage(self, exc: Exception) -> None:
        """A traceback for a new failure; one line a minute while the same one lasts."""
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        now = time.monotonic()
        if what != self._outage:
            self._outage, self._outage_logged = what, now
            if isinstance(exc, OUTAGE):
                log.warning("supervisor tick failed (%s); retrying every second", what)
            else:
                log.exception("supervisor tick failed; retrying")
        elif now - self._outage_logged >= OUTAGE_LOG_S:
            self._outage_logged = now
            log.warning("supervisor tick still failing (%s)", what)

    # -- workers -------------------------------------------------------------------------

    def _spawn(self, index: int) -> Slot:
        self._generation += 1
        worker_id = f"{self.name}-w{index}-{self._generation}"
        reader, writer = _context.Pipe(duplex=False)
        status = RunningSlot(_context)
        process = _context.Process(
            target=worker_main,
            args=(self._settings_json, worker_id, writer, status),
            name=f"conveyor-worker-{index}",
            daemon=True,
        )
        process.start()
        writer.close()
        log.info("started worker %s (pid %s)", worker_id, process.pid)
        return Slot(index, process, reader, worker_id, status, started=time.monotonic())

    def _kill(self, slot: Slot, reason: JobError | None) -> None:
        slot.kill_reason = reason
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(slot.process.pid or -1, signal.SIGKILL)

    def _tick(self) -> None:
        handles: list[object] = []
        for slot in self.slots:
            handles.append(slot.pipe)
            handles.append(slot.process.sentinel)
        ready = wait(handles, timeout=0.2)  # type: ignore[arg-type]
        now = time.monotonic()
        if not self._stop.is_set():
            for index in self.restarts.due(now):
                self.slots.append(self._spawn(index))
        for slot in list(self.slots):
            self._read(slot)
        for slot in list(self.slots):
            if slot.process.sentinel in ready or not slot.process.is_alive():
                self._on_exit(slot)
        self._watch(now)
        wall = time.time()
        if wall - self._last_heartbeat >= heartbeat_interval(self.settings.lease_s):
            self._last_heartbeat = wall
            self._heartbeat()
        if wall - self._last_reap >= reap_interval(self.settings.lease_s):
            self._last_reap = wall
            self.store.maintenance.reap_expired_leases(self.policy)

    def _read(self, slot: Slot) -> None:
        """Take in what the worker runs now (its shared slot) and what it said (its pipe)."""
        running, slot.jobs = slot.status.read()
        if running is None:
            slot.running = None
        elif slot.running is None or slot.running.token != running.token:
            # A new attempt: what was watched of the previous one no longer applies.
            slot.running = Watched(running.job_id, running.token, running.started,
                                   running.timeout_s)
            slot.pipeline = running.pipeline
        while True:
            try:
                if not slot.pipe.poll():
                    return
                message = slot.pipe.recv()
            except (EOFError, OSError):
                return
            if message[0] == "fatal":
                slot.fatal = str(message[1])

    def _on_exit(self, slot: Slot) -> None:
        # Messages sent just before the exit are still in the pipe.
        self._read(slot)
        slot.process.join(timeout=1)
        code = slot.process.exitcode
        crashed = code not in (0, None) and slot.kill_reason is None
        multiproc.mark_dead(slot.process.pid)
        if slot.running is not None:
            reason = slot.kill_reason or JobError(
                ErrorCode.WORKER_LOST, f"the worker process died (exit code {code})", True
            )
            self._record_failure(slot, slot.running, reason)
        elif crashed:
            log.warning("worker %s exited with code %s%s", slot.worker_id, code,
                        f": {slot.fatal}" if slot.fatal else "")
        with contextlib.suppress(Exception):
            slot.pipe.close()
        self.slots.remove(slot)
        if self._stop.is_set():
            return
        now = time.monotonic()
        stable = slot.jobs > 0 or now - slot.started >= STABLE_S
        delay = self.restarts.exited(slot.index, now, crashed=crashed, stable=stable,
                                     reason=slot.fatal or f"exit code {code}")
        if delay > 0:
            log.warning("worker %s keeps dying: restarting it in %.0f s", slot.index, delay)
        else:
            self.slots.append(self._spawn(slot.index))

    def _record_failure(self, slot: Slot, running: Watched, error: JobError) -> None:
        outcome = "lost"
        try:
            if error.code == ErrorCode.CANCELLED:
                self.store.attempts.finish_cancelled(running.job_id, running.token)
                outcome = "cancelled"
            else:
                state = self.store.attempts.fail(running.job_id, running.token, error, self.policy)
                log.info("job %s: %s -> %s", running.job_id, error.code, state)
                outcome = "retrying" if state == JobState.QUEUED else str(state.value)
        except LeaseLost:
            pass  # already finished, or a newer attempt owns it
        except OUTAGE as exc:
            # The database cannot take the failure now (its disk is full, it is down): the
            # lease runs out and the reaper requeues the job once the database takes writes.
            log.warning("job %s: could not record %s (%s); its lease will expire and the job "
                        "be requeued", running.job_id, error.code, type(exc).__name__)
        self._observe(slot, running, outcome)

    @staticmethod
    def _observe(slot: Slot, running: Watched, outcome: str) -> None:
        """Run time of an attempt that ended here (killed or released), not in its worker."""
        RUN_SECONDS.labels(slot.pipeline, outcome).observe(
            max(0.0, time.monotonic() - running.started))

    def _watch(self, now: float) -> None:
        """The I/O around :func:`conveyor.runner.watchdog.decide`: read RSS, kill, record."""
        for slot in self.slots:
            run = slot.running
            if run is None or slot.kill_reason is not None:
                continue
            rss = None
            if run.rss_due(now, self.limits):
                run.rss_checked = now
                rss = self._rss(slot)
            kill = decide(run.observe(now, rss), self.limits)
            if kill is not None:
                self._kill(slot, kill.reason)

    @staticmethod
    def _rss(slot: Slot) -> int | None:
        try:
            return int(psutil.Process(slot.process.pid).memory_info().rss)
        except (psutil.Error, ValueError):
            return None

    def _heartbeat(self) -> None:
        for slot in self.slots:
            run = slot.running
            if run is None:
                continue
            beat = self.store.attempts.heartbeat(run.job_id, run.token, self.settings.lease_s)
            if beat.cancel_requested:
                run.saw_cancel(time.monotonic())

    def _drained(self) -> bool:
        if any(s.running for s in self.slots):
            return False
        # A count of the whole table: at most a few times a second, not after every message.
        now = time.monotonic()
        if now - self._last_drain_check < DRAIN_CHECK_S:
            return False
        self._last_drain_check = now
        counts = self.store.jobs.count_by_state()
        return not counts.get(JobState.QUEUED, 0) and not counts.get(JobState.RUNNING, 0)

    def _clean_stale_work_dirs(self) -> None:
        root = self.settings.data_dir / "work"
        if not root.is_dir():
            return
        node = os.uname().nodename
        for entry in root.iterdir():
            # Work dirs are named "<node>-<supervisor pid>-w<n>-...": a dead pid's are leftovers.
            pid = entry.name.removeprefix(f"{node}-").split("-", 1)[0]
            if pid.isdigit() and not psutil.pid_exists(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)

    def _shutdown(self) -> None:
        """Stop claiming; let running jobs finish within ``drain_seconds``; release the rest."""
        deadline = time.monotonic() + self.settings.drain_seconds
        signalled = 0.0
        while time.monotonic() < deadline and any(s.process.is_alive() for s in self.slots):
            if time.monotonic() - signalled >= 1.0:
                # Again every second: a worker just forked has not yet restored SIGTERM (the
                # fork server ignores it), and a repeated SIGTERM changes nothing for the rest.
                signalled = time.monotonic()
                for slot in self.slots:
                    with contextlib.suppress(ProcessLookupError, TypeError):
                        os.kill(slot.process.pid or -1, signal.SIGTERM)
            for slot in self.slots:
                self._read(slot)
            if any(s.running for s in self.slots if s.process.is_alive()):
                self._heartbeat()
            time.sleep(0.05)
        for slot in self.slots:
            self._read(slot)
            if slot.process.is_alive():
                self._kill(slot, None)
                slot.process.join(timeout=5)
            if slot.running is not None:
                with contextlib.suppress(LeaseLost):
                    if self.store.attempts.release(slot.running.job_id, slot.running.token):
                        log.info("released job %s", slot.running.job_id)
                        self._observe(slot, slot.running, "released")
            multiproc.mark_dead(slot.process.pid)
        self.slots.clear()
