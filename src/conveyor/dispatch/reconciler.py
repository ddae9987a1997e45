"""The one reconciler of a scale-out deployment (any ``conveyor serve`` or Celery worker node
may run it; a PostgreSQL advisory lock elects one at a time).

Each tick it requeues (or fails) attempts whose lease ran out, and publishes the due jobs that
have no broker message since they last became runnable (``dispatched_at`` empty or older than
``run_after``). A broker that was down, a publisher killed between commit and publish, a lost
Redis message of a dead machine (sent again once when its heartbeat row goes stale): each delays
a job, none loses it. Jobs that only wait behind a backlog already have their message and are
left alone.
"""

from __future__ import annotations

import logging
import threading
import time

from conveyor.dispatch.broker import BrokerDispatcher
from conveyor.runner.retry import RetryPolicy
from conveyor.runner.watchdog import heartbeat_interval
from conveyor.store import Store
from conveyor.store.dispatching import LeaderLock

log = logging.getLogger("conveyor.reconciler")

#: How long a job may be due without a message before the reconciler sends one: the time the
#: publisher of its commit has to do it first.
GRACE_S = 2.0
INTERVAL_S = 0.5


def lost_after(lease_s: float) -> float:
    """A node whose heartbeat row is older than this is gone (three missed beats)."""
    return max(3 * heartbeat_interval(lease_s), 5.0)


class Reconciler:
    def __init__(self, store: Store, publisher: BrokerDispatcher, policy: RetryPolicy,
                 lease_s: float) -> None:
        self.store = store
        self.lease_s = lease_s
        self.publisher = publisher
        self.policy = policy
        self.lock = LeaderLock(store.db)
        self.leading = False
        self._failing = False

    def tick(self) -> None:
        """One pass, if this process leads. Never raises (an outage is logged once)."""
        try:
            self.leading = self.lock.hold()
            if not self.leading:
                return
            reaped = self.store.maintenance.reap_expired_leases(self.policy)
            if reaped:
                log.info("requeued %d job(s) whose lease expired", reaped)
            now = time.time()
            due = self.store.dispatching.undispatched(now, GRACE_S)
            if due:
                sent = self.publisher.publish(due)
                log.info("published %d job(s) that had no message", len(sent))
            self._resend_for_lost_nodes(now)
            self._failing = False
        except Exception as exc:
            self.leading = False
            if not self._failing:
                log.warning("reconciler pass failed (retrying): %s", exc)
            self._failing = True

    def _resend_for_lost_nodes(self, now: float) -> None:
        """Once per lost node: send again the due jobs whose message went out before it was
        last seen. Its running jobs come back through their leases; this covers messages it
        had received but not claimed (on Redis they stay unacked until the visibility
        timeout). Duplicates are harmless: a message finds its job claimed and acks.

        The node took messages until it died, after its last beat: a message sent just after
        that beat may be one it held. So "sent before" reaches as far past the last beat as
        the node could have lived unseen (a margin that also covers clocks that differ between
        machines)."""
        dispatching = self.store.dispatching
        silence = lost_after(self.lease_s)
        for node in dispatching.lost(now - silence):
            ids = dispatching.sent_before(min(node.seen_at + silence, now), now)
            if ids:
                self.publisher.publish(ids)
            if dispatching.forget(node.id):
                log.warning("worker node %s was lost; sent %d queued job(s) again", node.id,
                            len(ids))

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(INTERVAL_S):
            self.tick()
        self.lock.release()


def start_thread(reconciler: Reconciler) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=reconciler.run, args=(stop,), name="conveyor-reconciler",
                              daemon=True)
    thread.start()
    return thread, stop
