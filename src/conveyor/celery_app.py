"""conveyor's Celery app: the transport of the scale-out mode (``CONVEYOR_BROKER_URL``).

``conveyor worker`` runs it when a broker is set; the usual tools see it too::

    celery -A conveyor.celery_app inspect ping
    celery -A conveyor.celery_app inspect active
    celery -A conveyor.celery_app flower        # with the flower package installed

PostgreSQL is the truth and Celery only carries job ids: the one task, ``conveyor.run_job``,
claims exactly that job's row with a fresh lease token, or acks and does nothing (a duplicate
message, a cancelled, finished or not-yet-due job). Retries set ``run_after`` in the row (no
ETA/countdown), cancel is the row's flag, and the node's watchdog bootstep
(:mod:`conveyor.dispatch.node`) renews leases and kills children from the main process.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals
from celery.exceptions import Reject
from sqlalchemy.exc import SQLAlchemyError

from conveyor.dispatch.routing import DEFAULT_QUEUE, LONGEST_JOB_S, MAX_PRIORITY
from conveyor.settings import Settings

log = logging.getLogger("conveyor.celery")

TASK_NAME = "conveyor.run_job"


def make_app(settings: Settings) -> Celery:
    """A Celery app configured for conveyor (publishers and workers must agree on it)."""
    app = Celery("conveyor", broker=settings.broker_url, set_as_current=False)
    redis = (settings.broker_url or "").startswith(("redis://", "rediss://"))
    transport: dict[str, Any] = {}
    if redis:
        # kombu re-delivers a Redis message left unacked this long: keep it above the longest
        # job, so a long job is not run twice at once (the token would refuse the slower one,
        # but the work would be wasted). Lost workers are recovered by the lease, not this.
        transport = {"visibility_timeout": LONGEST_JOB_S,
                     "priority_steps": list(range(MAX_PRIORITY + 1)),
                     "queue_order_strategy": "priority"}
    app.conf.update(
        # Ack after the task returns, one message per free child: a dead child's message is
        # redelivered (reject_on_worker_lost) and no message waits behind a long job.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # The job table is the result store.
        task_ignore_result=True,
        result_backend=None,
        worker_max_tasks_per_child=settings.jobs_per_worker,
        # A lost broker connection makes acks-late messages come back: stop their tasks
        # rather than run them twice (the token would refuse one; this saves the work).
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_default_queue=DEFAULT_QUEUE,
        task_create_missing_queues=True,
        task_queue_max_priority=MAX_PRIORITY,
        task_default_priority=5 if not redis else MAX_PRIORITY - 5,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        imports=(),
    )
    app.task(name=TASK_NAME, ignore_result=True)(run_job)
    from conveyor.dispatch.node import WatchdogStep

    app.steps["worker"].add(WatchdogStep)
    app.conf["conveyor_settings"] = settings
    return app


@dataclass
class _Child:
    """What one pool child keeps between tasks (built after the fork)."""

    worker: Any = None


_child = _Child()
#: Names this worker node's attempts: ``{host}-{main pid}-{random}``; each child adds
#: ``-c{pid}``. The random part keeps PID namespaces (several "machines") apart.
NODE_PREFIX = f"{os.uname().nodename}-{os.getpid()}-{secrets.token_hex(3)}"


def node_prefix() -> str:
    return NODE_PREFIX


def run_job(job_id: str) -> None:
    """Run job ``job_id`` if it is runnable now; otherwise ack and do nothing."""
    worker = _child.worker
    if worker is None:  # not in a prefork child (a solo pool): build one here
        worker = _child.worker = _make_worker(_settings())
    try:
        claim = worker.store.attempts.claim(job_id, worker.worker_id, worker.settings.lease_s)
    except (SQLAlchemyError, OSError) as exc:
        # The database cannot be reached (a partition, a restart). Acking now would lose the
        # only message of a job that stays queued (the reconciler republishes only jobs with
        # no message since they became runnable): give it back to the broker instead, after a
        # pause so an outage does not turn into a hot redelivery loop.
        log.warning("job %s: cannot claim (%s); the message goes back to the broker", job_id,
                    type(exc).__name__)
        time.sleep(1.0)
        raise Reject(str(exc), requeue=True) from None
    if claim is None:
        log.debug("job %s is not runnable now: message dropped", job_id)
        return
    # A True answer (recycle after a MemoryError) is left to worker_max_tasks_per_child and
    # RLIMIT_AS: a prefork child cannot end itself between tasks without losing the ack.
    worker.run(claim)


def _settings() -> Settings:
    settings: Settings = app.conf["conveyor_settings"]
    return settings


def _make_worker(settings: Settings) -> Any:
    from conveyor.dispatch.broker import BrokerDispatcher
    from conveyor.runner.worker import Worker

    dispatcher = BrokerDispatcher(settings, app)
    worker = Worker(settings, f"{NODE_PREFIX}-c{os.getpid()}", dispatcher=dispatcher)
    dispatcher.bind(worker.store.dispatching)
    return worker


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _child_start(**_: Any) -> None:
    """In each pool child, after the fork: caps, then a Worker with its own engines and
    storage clients (neither is fork-safe)."""
    from conveyor.runner.worker import _cap_memory, _die_with_parent

    settings = _settings()
    _die_with_parent()
    _cap_memory(settings.worker_memory_mb)
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    _child.worker = _make_worker(settings)
    # Imports and engines live as long as the child: kept out of its full collections.
    gc.collect()
    gc.freeze()


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _child_stop(**_: Any) -> None:
    worker, _child.worker = _child.worker, None
    if worker is not None:
        worker.store.close()
        worker.storage.close()


def use(settings: Settings) -> Celery:
    """Rebuild the module's app from ``settings`` (the CLI's overrides)."""
    global app
    app = make_app(settings)
    return app


app = make_app(Settings())
