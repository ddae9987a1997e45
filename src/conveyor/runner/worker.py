"""One worker process: claim a job, run its pipeline, commit the outcome, repeat.

Runs in a child process started by the supervisor, which watches it from outside: the
supervisor renews the lease, enforces the timeout, the memory cap and cancellation by killing
this process if needed. The worker shows the supervisor what it runs in shared memory
(:mod:`conveyor.runner.status`), and says over a pipe why it exits when it gives up.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import shutil
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from conveyor.digest import file_digest
from conveyor.dispatch import Dispatcher
from conveyor.errors import InsufficientStorage, LeaseLost, ProcessorError
from conveyor.ingest.url_fetch import FetchLimits
from conveyor.models import ErrorCode, JobError, JobState
from conveyor.notify import JOBS
from conveyor.processors.base import InputInfo, ProcessorLimits
from conveyor.processors.builtin import build_registry
from conveyor.processors.registry import BadOptions, Registry, UnknownPipeline
from conveyor.runner.classify import classify
from conveyor.runner.context import AttemptState, RunContext, sniff_file
from conveyor.runner.retry import RetryPolicy
from conveyor.runner.status import RunningSlot
from conveyor.runner.url_input import fetch_url_input
from conveyor.settings import Settings
from conveyor.storage import (
    BlockingStorage,
    NotFound,
    artifact_key,
    artifacts_prefix,
    attempt_prefix,
    from_url,
    input_key,
)
from conveyor.store import Artifact, Claim, NewJob, Store
from conveyor.telemetry import logs
from conveyor.telemetry.metrics import QUEUE_WAIT_SECONDS, RUN_SECONDS, since

log = logging.getLogger("conveyor.worker")

#: A worker process's name in ``ps`` and ``top`` (``/proc/PID/comm``).
PROCESS_NAME = "conveyor-worker"

#: The worker's exit status when the database cannot be used (sysexits' EX_TEMPFAIL): the
#: supervisor restarts it with back-off, and the reason it sent goes to ``/readyz``.
EXIT_UNAVAILABLE = 75
#: What the store raises while the database is down or its disk is full.
OUTAGE = (InsufficientStorage, SQLAlchemyError)

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def _die_with_parent(name: str | None = None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphaned workers), and name
    it ``name`` in ``ps``/``top`` when given (the kernel keeps 15 bytes).

    An embedded worker's parent is the supervisor's fork server, which exits as soon as the
    supervisor is gone.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if name:
            libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


def _cap_memory(megabytes: int) -> None:
    if megabytes > 0:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class Worker:
    def __init__(self, settings: Settings, worker_id: str, pipe: Connection | None = None, *,
                 slot: RunningSlot | None = None, dispatcher: Dispatcher | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.pipe = pipe
        #: Where the supervisor reads what this worker runs (None outside a supervisor).
        self.slot = slot
        self.store = Store(
            settings.db_url,
            run_dir=settings.run_dir,
            retention_s=settings.retention.total_seconds(),
            default_webhook_url=settings.webhook_url,
            durable=False,
            dispatcher=dispatcher,
        )
        # Workers are synchronous: each storage call runs to completion (see storage.blocking).
        self.storage = BlockingStorage(from_url(settings))
        self.registry: Registry = build_registry(settings.processors)
        self.policy = RetryPolicy(settings.retry_base_s, settings.retry_max_s)
        self.limits = ProcessorLimits.from_settings(settings)
        self.fetch_limits = FetchLimits.from_settings(settings)
        self.stopping = False
        self.work_root = settings.data_dir / "work"
        #: Non-zero when the worker stopped because the database could not be used.
        self.exit_code = 0
        #: Whether a successful commit may claim the next job in its own transaction.
        self.chain = False
        #: The job claimed that way: run next, or given back if the worker stops first.
        self.next_claim: Claim | None = None

    def _tell(self, *message: Any) -> None:
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                self.pipe.send(message)

    def serve(self) -> None:
        """Claim and run jobs until told to stop or recycled after ``jobs_per_worker`` jobs."""
        listener = self.store.listener(JOBS)
        done = 0
        try:
            while not self.stopping and done < self.settings.jobs_per_worker:
                # A job that ends well claims the next one in its commit, unless this process
                # is about to be recycled.
                self.chain = done + 1 < self.settings.jobs_per_worker
                try:
                    claim, self.next_claim = self.next_claim, None
                    if claim is None:
                        claim = self.store.attempts.claim_next(self.worker_id,
                                                               self.settings.lease_s)
                except OUTAGE as exc:
                    # No claim can be written: stop with a reason; the supervisor restarts this
                    # process with back-off rather than letting it spin on the error.
                    reason = _outage_reason(exc)
                    log.warning("cannot claim jobs (%s): exiting", reason)
                    self._tell("fatal", reason)
                    self.exit_code = EXIT_UNAVAILABLE
                    return
                if claim is None:
                    listener.wait(1.0)
                    continue
                listener.drain()
                if self.slot is not None:
                    self.slot.begin(claim.job.id, claim.token, claim.job.timeout_s,
                                    claim.job.pipeline)
                if claim.attempt == 1:
                    waited = (claim.job.started_at or time.time()) - claim.job.created_at
                    QUEUE_WAIT_SECONDS.observe(max(0.0, waited))
                # This attempt's log lines name the request that created the job.
                context = logs.REQUEST_ID.set(claim.request_id)
                attempt = logs.ATTEMPT.set(claim.attempt)
                try:
                    recycle = self.run(claim)
                finally:
                    logs.ATTEMPT.reset(attempt)
                    logs.REQUEST_ID.reset(context)
                if self.slot is not None:
                    self.slot.end()
                done += 1
                if recycle:
                    break
        finally:
            if self.next_claim is not None:  # stopping: give the chained job back
                with contextlib.suppress(Exception):
                    self.store.attempts.release(self.next_claim.job.id, self.next_claim.token)
            listener.close()
            self.store.close()
            self.storage.close()

    def run(self, claim: Claim) -> bool:
        """Run one attempt and record its outcome. True if this process should be recycled."""
        job = claim.job
        # The token makes the name unique: no earlier attempt can have left this directory.
        work_dir = self.work_root / f"{self.worker_id}-{claim.token[:12]}"
        started = time.monotonic()
        ended: JobState | None = None
        recycle = False
        try:
            ended = self._run(claim, work_dir)
        except LeaseLost:
            log.info("job %s: lease lost, outcome dropped", job.id)
        except Exception as exc:  # MemoryError included
            ended, recycle = self._ended_by(claim, exc)
        finally:
            if work_dir.exists():
                shutil.rmtree(work_dir, ignore_errors=True)
            RUN_SECONDS.labels(job.pipeline, outcome_of(ended)).observe(since(started))
        return recycle

    def _ended_by(self, claim: Claim, exc: Exception) -> tuple[JobState | None, bool]:
        """Record the outcome of an attempt that raised: (the job's state, or None if the lease
        was lost; True if this process should recycle)."""
        job = claim.job
        if isinstance(exc, ProcessorError) and exc.code == ErrorCode.CANCELLED:
            # The processor honoured a cancel request: not a failure.
            try:
                self.store.attempts.finish_cancelled(job.id, claim.token)
            except LeaseLost:
                log.info("job %s: lease lost before recording the cancel", job.id)
                return None, False
            except OUTAGE as err:
                self._unrecorded(claim, ErrorCode.CANCELLED, err)
                return None, False
            return JobState.CANCELLED, False
        error = classify(exc, memory_cap_mb=self.settings.worker_memory_mb)
        if isinstance(exc, ProcessorError | BadOptions | UnknownPipeline):
            log.info("job %s: %s: %s", job.id, error.code, error.message)
        elif isinstance(exc, InsufficientStorage):
            log.warning("job %s: attempt failed: %s", job.id, exc)
        else:  # unexpected: the traceback goes to the log, one short line to the job
            log.error("job %s: attempt failed (%s)", job.id, error.code, exc_info=exc)
        state = self._fail(claim, error)
        # After a MemoryError the heap may be fragmented and huge: start a fresh process.
        return state, error.code == ErrorCode.MEMORY_EXCEEDED

    def _fail(self, claim: Claim, error: JobError) -> JobState | None:
        try:
            return self.store.attempts.fail(claim.job.id, claim.token, error, self.policy)
        except LeaseLost:
            log.info("job %s: lease lost before recording %s", claim.job.id, error.code)
            return None
        except OUTAGE as exc:
            self._unrecorded(claim, error.code, exc)
            return None

    @staticmethod
    def _unrecorded(claim: Claim, what: str, exc: Exception) -> None:
        # The job stays `running` only until its lease runs out (the supervisor stops renewing
        # it once told "done"); the reaper then requeues it, once the database takes writes.
        log.warning("job %s: could not record %s (%s); the lease will expire and the job be "
                    "requeued", claim.job.id, what, _outage_reason(exc))

    def _run(self, claim: Claim, work_dir: Path) -> JobState | None:
        """Run the attempt's steps and commit; the job's state after it (None: lease lost)."""
        job = claim.job
        pipe = self.registry.pipeline(job.pipeline)  # UnknownPipeline: see _ended_by
        if job.input_pending:
            # A URL import: fetching the bytes is the first step (a retry fetches again).
            job = fetch_url_input(self.storage, self.store, claim, self.fetch_limits)
        if self.storage.stat(job.input_key) is None:
            return self._fail(claim, JobError(ErrorCode.INPUT_MISSING,
                                              "the input file is missing", False))

        def fetch_input(path: Path) -> None:
            # Processors read a file of the attempt's own directory, whatever the backend:
            # the local one links it there, an object store downloads it and checks the
            # sha256 (a mismatch is a retryable storage_error: the next download may be whole).
            try:
                self.storage.get_to_file(job.input_key, path, job.input_sha256)
            except NotFound:
                raise ProcessorError(ErrorCode.INPUT_MISSING, "the input file is missing",
                                     retryable=False) from None

        state = AttemptState(work_dir, fetch_input)
        info = InputInfo(job.input_filename, job.input_size, job.input_sha256, job.media_type,
                         job.declared_type)
        results: dict[str, Any] = {}
        # Whatever a step raises ends the attempt: run() hands it to _ended_by.
        options = self.registry.validate(job.pipeline, job.options)
        first = self.registry.processors[pipe.steps[0]]
        if not first.takes(job.media_type):  # a plug-in's accepts is a promise: keep it
            raise ProcessorError("unsupported_format", f"{first.name} does not accept "
                                 f"{job.media_type} (it accepts {', '.join(first.accepts)})")
        for step in pipe.steps:
            proc = self.registry.processors[step]
            raw = options if pipe.single else options.get(step)
            ctx = RunContext(
                store=self.store, registry=self.registry, job_id=job.id, token=claim.token,
                attempt=claim.attempt, input=info,
                options=proc.validate_options(raw), work_dir=work_dir, state=state,
                progress_interval_s=self.settings.progress_interval_s, limits=self.limits,
            )
            results[step] = proc(ctx)
            # A cancel that arrives now is still honoured: complete() checks it in its
            # transaction, and cancellation wins.
        result = results[pipe.steps[0]] if pipe.single else results
        return self._commit(claim, result, state)

    def _commit(self, claim: Claim, result: Any, state: AttemptState) -> JobState:
        job = claim.job
        produced: list[Artifact] = []
        children: list[NewJob] = []
        try:
            for item in state.produced.values():
                size, sha = file_digest(item.path)
                key = artifact_key(job.id, claim.token, item.name)
                produced.append(Artifact(job.id, item.name, item.media_type, size, sha, key))
            # All at once: their fsyncs overlap (three renditions: one directory fsync).
            self.storage.put_many([(item.path, a.storage_key) for item, a in
                                   zip(state.produced.values(), produced, strict=True)])
            for child in state.children:
                size, sha = file_digest(child.path)
                media_type = sniff_file(child.path, child.filename)
                children.append(NewJob(
                    id=child.id, pipeline=child.pipeline, options=child.options,
                    input_key=input_key(child.id), input_filename=child.filename[:300],
                    input_size=size, input_sha256=sha, media_type=media_type,
                    parent_id=job.id, max_attempts=job.max_attempts, timeout_s=job.timeout_s,
                    priority=job.priority, tenant_id=job.tenant_id,
                ))
                self.storage.put_from_file(child.path, input_key(child.id))
            if self.chain and not self.stopping:
                outcome, self.next_claim = self.store.attempts.complete_and_claim_next(
                    job.id, claim.token, result, produced, children, self.worker_id,
                    self.settings.lease_s)
            else:
                outcome = self.store.attempts.complete(job.id, claim.token, result, produced,
                                                       children)
        except BaseException:
            # Lost lease, full disk, database error: nothing of this attempt may remain (and
            # its bytes must not keep a full disk full).
            self._drop_outputs(job.id, claim.token, children)
            raise
        if outcome is not JobState.SUCCEEDED:
            # Cancelled while finishing: cancellation wins, the outputs are dropped.
            self._drop_outputs(job.id, claim.token, children)
            return outcome
        # Leftovers of earlier, killed attempts (even an attempt 1 may follow some: a retry
        # starts counting again).
        ours = attempt_prefix(job.id, claim.token)
        for key in self.storage.keys(artifacts_prefix(job.id)):
            if not key.startswith(ours):
                self.storage.delete(key)
        return outcome

    def _drop_outputs(self, job_id: str, token: str, children: list[NewJob]) -> None:
        try:
            self.storage.delete_prefix(attempt_prefix(job_id, token))
            for child in children:
                self.storage.delete(child.input_key)
        except Exception:
            log.warning("job %s: could not remove the outputs of attempt %s", job_id, token[:12],
                        exc_info=True)


def _outage_reason(exc: Exception) -> str:
    if isinstance(exc, InsufficientStorage):
        return str(exc)
    return f"database error: {type(exc).__name__}"


def outcome_of(state: JobState | None) -> str:
    """The ``outcome`` label of an attempt that left its job in ``state`` (None: lease lost)."""
    if state is None:
        return "lost"
    return {JobState.QUEUED: "retrying"}.get(state, state.value)


def worker_main(settings_json: str, worker_id: str, pipe: Connection, slot: RunningSlot) -> None:
    """Entry point of a worker process (forked by the supervisor's fork server)."""
    # The fork server ignores SIGTERM, and so would this process: until it can finish a job
    # and stop (below), a SIGTERM ends it at once, as for any process starting up.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(PROCESS_NAME)
    settings = Settings.model_validate_json(settings_json)
    _cap_memory(settings.worker_memory_mb)
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    logs.configure(settings.log_level, settings.log_format, process=worker_id)
    worker = Worker(settings, worker_id, pipe, slot=slot)

    def _stop(_signum: int, _frame: Any) -> None:
        # Finish the current job, claim no more.
        worker.stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker.serve()
    if worker.exit_code:
        sys.exit(worker.exit_code)

