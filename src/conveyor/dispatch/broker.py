"""The Celery dispatcher: publish ``run_job(job_id)`` for the jobs a commit made runnable now.

Publishing runs on a thread of its own, so a slow or dead broker never holds up a request: the
row is committed, the upload still answers 202, and a job whose publish failed keeps
``dispatched_at`` empty until the reconciler (:mod:`conveyor.dispatch.reconciler`) sends it.
Jobs due later (a retry's back-off) are not published now: the reconciler sends them when due,
so no ETA/countdown message ever sits in the broker.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from conveyor.dispatch import Runnable
from conveyor.dispatch.routing import broker_priority, hard_time_limit, queue_for, routes
from conveyor.store.dispatching import Dispatch

if TYPE_CHECKING:
    from conveyor.settings import Settings
    from conveyor.store.dispatching import Dispatching

log = logging.getLogger("conveyor.dispatch")

#: A job due within this margin counts as due now (clocks of one machine, a few ms apart).
_DUE_MARGIN_S = 0.05


class BrokerDispatcher:
    """Publishes through a Celery app; :meth:`bind` it to the store it reads before use."""

    def __init__(self, settings: Settings, app: Any) -> None:
        self.app = app
        self.broker_url = settings.broker_url or ""
        self.cancel_grace_s = settings.cancel_grace_s
        self.routes = routes(settings.queues)
        self._dispatching: Dispatching | None = None
        self._pending: queue.SimpleQueue[Runnable | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._broker_down = False

    def bind(self, dispatching: Dispatching) -> None:
        self._dispatching = dispatching

    def runnable(self, jobs: Sequence[Runnable]) -> None:
        now = time.time() + _DUE_MARGIN_S
        due = [job for job in jobs if job.run_after <= now]
        if not due:
            return
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="conveyor-publisher",
                                            daemon=True)
            self._thread.start()
        for job in due:
            self._pending.put(job)

    def publish(self, job_ids: Sequence[str]) -> list[str]:
        """Publish one message per queued job now; returns the ids sent. Raises when the
        broker or the database is unreachable (nothing is marked sent then)."""
        assert self._dispatching is not None, "BrokerDispatcher.bind() was not called"
        return self._send(self._dispatching.prepare(job_ids))

    def _send(self, items: Sequence[Dispatch]) -> list[str]:
        assert self._dispatching is not None, "BrokerDispatcher.bind() was not called"
        published_at = time.time()
        sent: list[str] = []
        try:
            for item in items:
                self.app.send_task(
                    "conveyor.run_job",
                    args=[item.job_id],
                    task_id=f"{item.job_id}.{item.n}",
                    queue=queue_for(item.pipeline, self.routes),
                    priority=broker_priority(item.priority, self.broker_url),
                    time_limit=hard_time_limit(item.timeout_s, self.cancel_grace_s),
                    ignore_result=True,
                    retry=False,
                )
                sent.append(item.job_id)
        finally:
            self._dispatching.mark(sent, published_at)
        return sent

    def _publish_batch(self, batch: list[Runnable]) -> None:
        # A new job carries its route: no read before its publish (the hot path of an upload).
        known = [Dispatch(r.job_id, 1, r.pipeline, r.priority, r.timeout_s)
                 for r in batch if r.pipeline is not None]
        self._send(known)
        others = [r.job_id for r in batch if r.pipeline is None]
        if others:
            self.publish(others)

    def _loop(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 200:
                try:
                    more = self._pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._pending.put(None)
                    break
                batch.append(more)
            try:
                self._publish_batch(batch)
                if self._broker_down:
                    log.info("broker reachable again")
                self._broker_down = False
            except Exception as exc:
                # The reconciler sends these when the broker is back: log once per outage.
                if not self._broker_down:
                    log.warning("could not publish %d job(s), the reconciler will: %s",
                                len(batch), exc)
                self._broker_down = True

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None and self._pid == os.getpid():
            self._pending.put(None)
            thread.join(timeout=5)
