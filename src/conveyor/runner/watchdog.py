"""The watchdog's rules, as pure functions of what was observed: when to kill a running job.

A job is killed when it ran past its timeout, when a cancel was seen and the job did not stop
within the grace period, or when its process's resident memory went over the cap. Nothing here
reads a clock, a process or the database: the caller observes (monotonic time, the RSS of the
process that runs the job, whether the last heartbeat reported a cancel request) and acts on
the answer (kill the process, record the reason). :class:`~conveyor.runner.supervisor.Supervisor`
is that caller today, for its own worker processes.

A Celery bootstep in a worker's main process can reuse it unchanged: on ``task_prerun`` it makes
a :class:`Watched` for the job id, lease token and timeout the task carries, and its timer
thread does what ``Supervisor._watch`` and ``Supervisor._heartbeat`` do, every tick:

- every :func:`heartbeat_interval` seconds, renew the lease (``store.attempts.heartbeat``)
  and, when the answer says a cancel was requested, call :meth:`Watched.saw_cancel`;
- when :meth:`Watched.rss_due` says so, set ``rss_checked`` and read the pool child's RSS;
- call :func:`decide` with :meth:`Watched.observe`, and on a :class:`Kill` send SIGKILL to the
  pool child and record ``kill.reason`` (``store.attempts.fail`` /
  ``store.attempts.finish_cancelled``).
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.models import ErrorCode, JobError

#: Least time between two RSS readings of one job's process (psutil costs a syscall or two).
RSS_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """What the watchdog enforces beyond each job's own timeout."""

    #: How long a job may take to stop after its cancel was seen.
    cancel_grace_s: float
    #: Resident-set cap of the process running a job, in bytes; 0 disables it.
    rss_cap_bytes: int = 0

    @classmethod
    def of(cls, cancel_grace_s: float, worker_rss_mb: int) -> WatchLimits:
        """From the settings' units (``cancel_grace_s``, ``worker_rss_mb``)."""
        return cls(cancel_grace_s, worker_rss_mb * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at a running job. Times are monotonic seconds."""

    now: float
    started: float
    timeout_s: float
    #: When a cancel request was first seen, or None.
    cancel_seen: float | None = None
    #: The RSS of the process running the job, or None when not read this time.
    rss: int | None = None


@dataclass(frozen=True, slots=True)
class Kill:
    """Kill the process running the job, and record ``reason`` as the attempt's outcome."""

    reason: JobError


def decide(obs: Observation, limits: WatchLimits) -> Kill | None:
    """Whether to kill the job's process now, and why (pure). The timeout wins over a pending
    cancel, which wins over memory: the reason recorded is the first that applies."""
    if obs.now - obs.started > obs.timeout_s:
        return Kill(JobError(ErrorCode.TIMEOUT,
                             f"the job ran past its timeout of {obs.timeout_s:g} s", False))
    if obs.cancel_seen is not None and obs.now - obs.cancel_seen > limits.cancel_grace_s:
        return Kill(JobError(ErrorCode.CANCELLED, "cancelled", False))
    if limits.rss_cap_bytes and obs.rss is not None and obs.rss > limits.rss_cap_bytes:
        return Kill(JobError(
            ErrorCode.MEMORY_EXCEEDED,
            f"the worker used {obs.rss >> 20} MiB, over its cap of "
            f"{limits.rss_cap_bytes >> 20} MiB", False))
    return None


def heartbeat_interval(lease_s: float) -> float:
    """How often to renew leases: four times per lease, so one late beat loses nothing."""
    return max(lease_s / 4, 0.2)


def reap_interval(lease_s: float) -> float:
    """How often to requeue jobs whose lease expired."""
    return max(lease_s / 2, 0.5)


@dataclass(slots=True)
class Watched:
    """What the watcher knows of one running job (mutable; updated by the caller's I/O)."""

    job_id: str
    token: str
    started: float
    timeout_s: float
    cancel_seen: float | None = None
    rss_checked: float | None = None

    def saw_cancel(self, now: float) -> None:
        """A heartbeat reported a cancel request; the grace period starts at the first one."""
        if self.cancel_seen is None:
            self.cancel_seen = now

    def rss_due(self, now: float, limits: WatchLimits) -> bool:
        """Whether to read the RSS now (a cap is set and the last reading is old enough)."""
        if not limits.rss_cap_bytes:
            return False
        return self.rss_checked is None or now - self.rss_checked >= RSS_INTERVAL_S

    def observe(self, now: float, rss: int | None = None) -> Observation:
        return Observation(now, self.started, self.timeout_s, self.cancel_seen, rss)
