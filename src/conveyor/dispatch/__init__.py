"""The dispatcher seam: "these jobs are runnable now", said once, after the commit.

The store calls :meth:`Dispatcher.runnable` after every transaction that made jobs runnable
(a new job, a child job, a retry with its ``run_after``, a reaper's requeue, a user's retry, a
released job). What it does with that is the deployment's business:

- :class:`~conveyor.dispatch.embedded.EmbeddedDispatcher` (the default) wakes idle local
  workers: a datagram to each listener on SQLite, ``NOTIFY`` on PostgreSQL. Workers claim the
  most urgent job themselves, so the ids are only a hint.
- A Celery dispatcher publishes ``run_job(job_id)`` per id; the task then claims exactly that
  row with :meth:`conveyor.store.attempts.Attempts.claim`.

A dispatcher must never be the truth: the job table is. A lost wake-up or publish delays a job
(workers re-check on a timer, a reconciler republishes), it never loses one. New dispatchers go
in a module of their own beside ``embedded.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Runnable:
    """A job that may run from ``run_after`` (UNIX seconds) on.

    A new job also carries what routing needs (``pipeline``, ``priority``, ``timeout_s``), so
    a broker dispatcher publishes it without reading the row back; elsewhere ``pipeline`` is
    None and the dispatcher reads them.
    """

    job_id: str
    run_after: float
    pipeline: str | None = None
    priority: int = 0
    timeout_s: float = 0.0


class Dispatcher(Protocol):
    def runnable(self, jobs: Sequence[Runnable]) -> None:
        """Called after the commit that made ``jobs`` runnable. Must not raise for a lost
        wake-up: log it and return (the job table stays the truth)."""
        ...

    def close(self) -> None: ...


__all__ = ["Dispatcher", "Runnable"]
