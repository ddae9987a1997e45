"""The watchdog of a Celery worker node: a bootstep in the worker's main process.

It does for the pool children what :class:`~conveyor.runner.supervisor.Supervisor` does for its
own workers, with the same pure rules (:func:`conveyor.runner.watchdog.decide`). The children's
attempts are found in the database by the node's worker-id prefix (each child claims as
``{prefix}-c{pid}``), so nothing has to travel from the child to the main process. Every tick:

- a child that died under a running attempt (segfault, ``os.abort``, RLIMIT) gets the attempt
  recorded as ``worker_lost``: retried, or failed after ``max_attempts`` (poison files end);
- a job past its time-out, a cancel not honoured within the grace period, or a child over its
  RSS cap: SIGKILL the child, and record ``timeout`` / ``cancelled`` / ``memory_exceeded`` under
  the attempt's token. Celery replaces the child; ``task_reject_on_worker_lost`` puts the
  message back, and its redelivery finds nothing runnable and acks;
- every :func:`heartbeat_interval`, renew the leases of the live attempts (a child stuck in
  native code keeps its lease), note cancel requests, and upsert the node's ``workers`` row;
The node also runs a :class:`~conveyor.dispatch.reconciler.Reconciler` on a thread of its own
(it acts only while it holds the election).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
from celery import bootsteps, signals

from conveyor.dispatch.broker import BrokerDispatcher
from conveyor.dispatch.reconciler import INTERVAL_S, Reconciler, start_thread
from conveyor.errors import LeaseLost
from conveyor.models import ErrorCode, JobError
from conveyor.runner.retry import RetryPolicy
from conveyor.runner.watchdog import Watched, WatchLimits, decide, heartbeat_interval
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.store.dispatching import Running, WorkerNode

log = logging.getLogger("conveyor.node")

TICK_S = 0.2


@dataclass(slots=True)
class _Attempt:
    watched: Watched
    pid: int
    started_at: float
    ended: bool = False


@dataclass
class NodeWatch:
    """The watchdog's state and one :meth:`tick` (Celery-free; the bootstep drives it)."""

    settings: Settings
    store: Store
    prefix: str
    node_id: str
    queues: str
    concurrency: int
    reconciler: Reconciler | None = None
    attempts: dict[str, _Attempt] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    _last_beat: float = 0.0
    _last_reconcile: float = 0.0

    def __post_init__(self) -> None:
        self.limits = WatchLimits.of(self.settings.cancel_grace_s, self.settings.worker_rss_mb)
        self.policy = RetryPolicy(self.settings.retry_base_s, self.settings.retry_max_s)

    def tick(self) -> None:
        self._track(self.store.dispatching.running_under(self.prefix))
        now = time.monotonic()
        for attempt in list(self.attempts.values()):
            if not attempt.ended:
                self._watch(attempt, now)
        wall = time.time()
        if wall - self._last_beat >= heartbeat_interval(self.settings.lease_s):
            self._last_beat = wall
            self._heartbeat()
        if self.reconciler is not None and wall - self._last_reconcile >= INTERVAL_S:
            self._last_reconcile = wall
            self.reconciler.tick()

    def _track(self, rows: list[Running]) -> None:
        now, wall = time.monotonic(), time.time()
        tokens = set()
        for row in rows:
            tokens.add(row.token)
            if row.token not in self.attempts:
                pid = int(row.worker_id.rsplit("-c", 1)[-1] or 0)
                # Timed from the claim (this machine's clock wrote started_at).
                watched = Watched(row.job_id, row.token, now - max(0.0, wall - row.started_at),
                                  row.timeout_s)
                self.attempts[row.token] = _Attempt(watched, pid, row.started_at)
        for token in list(self.attempts):
            if token not in tokens:
                del self.attempts[token]  # finished, failed, reaped: not ours to watch

    def _watch(self, attempt: _Attempt, now: float) -> None:
        run = attempt.watched
        if attempt.pid == os.getpid():
            # A solo or threads pool runs jobs in this process: renew leases, never kill it.
            return
        if not self._child_alive(attempt):
            self._record(attempt, JobError(ErrorCode.WORKER_LOST,
                                           "the worker process died", True))
            return
        rss = None
        if run.rss_due(now, self.limits):
            run.rss_checked = now
            with contextlib.suppress(psutil.Error):
                rss = int(psutil.Process(attempt.pid).memory_info().rss)
        kill = decide(run.observe(now, rss), self.limits)
        if kill is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(attempt.pid, signal.SIGKILL)
            log.info("job %s: killed child %d (%s)", run.job_id, attempt.pid, kill.reason.code)
            self._record(attempt, kill.reason)

    def _child_alive(self, attempt: _Attempt) -> bool:
        """The attempt's child still runs (and is not a later process given the same pid)."""
        try:
            proc = psutil.Process(attempt.pid)
            return bool(proc.ppid() == os.getpid() and proc.status() != psutil.STATUS_ZOMBIE
                    and proc.create_time() <= attempt.started_at + 1)
        except psutil.Error:
            return False

    def _record(self, attempt: _Attempt, error: JobError) -> None:
        attempt.ended = True
        run = attempt.watched
        try:
            if error.code == ErrorCode.CANCELLED:
                self.store.attempts.finish_cancelled(run.job_id, run.token)
            else:
                state = self.store.attempts.fail(run.job_id, run.token, error, self.policy)
                log.info("job %s: %s -> %s", run.job_id, error.code, state)
        except LeaseLost:
            pass  # it ended meanwhile, or a newer attempt owns it

    def _heartbeat(self) -> None:
        for attempt in self.attempts.values():
            if attempt.ended:
                continue
            run = attempt.watched
            beat = self.store.attempts.heartbeat(run.job_id, run.token, self.settings.lease_s)
            if beat.cancel_requested:
                run.saw_cancel(time.monotonic())
        self.beat_now()

    def beat_now(self) -> None:
        """Upsert this node's ``workers`` row."""
        live = [a for a in self.attempts.values() if not a.ended]
        self.store.dispatching.beat(WorkerNode(
            self.node_id, os.uname().nodename, os.getpid(), self.queues, self.concurrency,
            len(live), time.time()), self.started_at)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:
                # A database hiccup must not stop the watchdog: leases outlive short outages.
                log.exception("watchdog tick failed; retrying")
                stop.wait(1.0)


class WatchdogStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts :class:`NodeWatch` on a thread once the pool is up; stops it after the pool has
    drained on shutdown (``worker_shutdown``), so leases are renewed while jobs finish."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.watch: NodeWatch | None = None

    def start(self, parent: Any) -> None:
        from conveyor.celery_app import node_prefix

        settings: Settings = parent.app.conf["conveyor_settings"]
        store = Store(settings.db_url, run_dir=settings.run_dir,
                      retention_s=settings.retention.total_seconds(),
                      default_webhook_url=settings.webhook_url,
                      dispatcher=(publisher := BrokerDispatcher(settings, parent.app)))
        publisher.bind(store.dispatching)
        reconciler = Reconciler(store, publisher, RetryPolicy(settings.retry_base_s,
                                                              settings.retry_max_s),
                                settings.lease_s)
        queues = ",".join(sorted(q.name for q in parent.app.amqp.queues.consume_from.values()))
        self.watch = NodeWatch(settings, store, node_prefix(), parent.hostname, queues,
                               parent.concurrency)
        # The row exists before the consumer takes its first message: a node lost at once
        # still gets its received-but-unclaimed messages sent again by the reconciler.
        self.watch.beat_now()
        # Its own thread: a publish to an unreachable broker must not delay lease renewals.
        self.reconciler, self.reconciler_stop = reconciler, start_thread(reconciler)[1]
        self.thread = threading.Thread(target=self.watch.run, args=(self.stop_event,),
                                       name="conveyor-watchdog", daemon=True)
        self.thread.start()

        def _stop(**_: Any) -> None:
            self.shutdown(parent)

        signals.worker_shutdown.connect(_stop, weak=False)

    def stop(self, parent: Any) -> None:
        """Warm shutdown: keep watching while the pool drains (see :meth:`shutdown`)."""

    def shutdown(self, parent: Any) -> None:
        if self.thread is None or self.watch is None:
            return
        self.stop_event.set()
        self.reconciler_stop.set()
        self.thread.join(timeout=10)
        self.thread = None
        with contextlib.suppress(Exception):
            self.watch.store.dispatching.forget(self.watch.node_id)
        self.watch.store.close()
