"""One worker process: claim a job, run its pipeline, commit the outcome, repeat.

Runs in a child process started by the supervisor, which watches it from outside: the
supervisor renews the lease, enforces the timeout, the memory cap and cancellation by killing
this process if needed. The worker tells the supervisor what it runs over a pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import shutil
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from conveyor.digest import file_digest
from conveyor.dispatch import Dispatcher
from conveyor.errors import LeaseLost, ProcessorError
from conveyor.models import ErrorCode, JobError, JobState
from conveyor.notify import JOBS
from conveyor.processors.base import InputInfo, ProcessorLimits
from conveyor.processors.builtin import build_registry
from conveyor.processors.registry import BadOptions, Registry, UnknownPipeline
from conveyor.runner.classify import classify
from conveyor.runner.context import AttemptState, RunContext, sniff_file
from conveyor.runner.retry import RetryPolicy
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

log = logging.getLogger("conveyor.worker")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the supervisor dies (no orphaned workers)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _cap_memory(megabytes: int) -> None:
    if megabytes > 0:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class Worker:
    def __init__(self, settings: Settings, worker_id: str, pipe: Connection | None = None, *,
                 dispatcher: Dispatcher | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.pipe = pipe
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
        self.stopping = False
        self.work_root = settings.data_dir / "work"

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
                claim = self.store.attempts.claim_next(self.worker_id, self.settings.lease_s)
                if claim is None:
                    listener.wait(1.0)
                    continue
                listener.drain()
                self._tell("start", claim.job.id, claim.token, claim.job.timeout_s)
                recycle = self.run(claim)
                self._tell("done", claim.job.id)
                done += 1
                if recycle:
                    break
        finally:
            listener.close()
            self.store.close()
            self.storage.close()

    def run(self, claim: Claim) -> bool:
        """Run one attempt and record its outcome. True if this process should be recycled."""
        job = claim.job
        # The token makes the name unique: no earlier attempt can have left this directory.
        work_dir = self.work_root / f"{self.worker_id}-{claim.token[:12]}"
        try:
            self._run(claim, work_dir)
        except LeaseLost:
            log.info("job %s: lease lost, outcome dropped", job.id)
        except Exception as exc:  # MemoryError included
            return self._ended_by(claim, exc)
        finally:
            if work_dir.exists():
                shutil.rmtree(work_dir, ignore_errors=True)
        return False

    def _ended_by(self, claim: Claim, exc: Exception) -> bool:
        """Record the outcome of an attempt that raised. True if this process should recycle."""
        job = claim.job
        if isinstance(exc, ProcessorError) and exc.code == ErrorCode.CANCELLED:
            # The processor honoured a cancel request: not a failure.
            try:
                self.store.attempts.finish_cancelled(job.id, claim.token)
            except LeaseLost:
                log.info("job %s: lease lost before recording the cancel", job.id)
            return False
        error = classify(exc, memory_cap_mb=self.settings.worker_memory_mb)
        if isinstance(exc, ProcessorError | BadOptions | UnknownPipeline):
            log.info("job %s: %s: %s", job.id, error.code, error.message)
        else:  # unexpected: the traceback goes to the log, one short line to the job
            log.error("job %s: attempt failed (%s)", job.id, error.code, exc_info=exc)
        self._fail(claim, error)
        # After a MemoryError the heap may be fragmented and huge: start a fresh process.
        return error.code == ErrorCode.MEMORY_EXCEEDED

    def _fail(self, claim: Claim, error: JobError) -> None:
        try:
            self.store.attempts.fail(claim.job.id, claim.token, error, self.policy)
        except LeaseLost:
            log.info("job %s: lease lost before recording %s", claim.job.id, error.code)

    def _run(self, claim: Claim, work_dir: Path) -> None:
        job = claim.job
        pipe = self.registry.pipeline(job.pipeline)  # UnknownPipeline: see _ended_by
        if self.storage.stat(job.input_key) is None:
            self._fail(claim, JobError(ErrorCode.INPUT_MISSING, "the input file is missing", False))
            return

        def fetch_input(path: Path) -> None:
            # Processors read a file of the attempt's own directory, whatever the backend:
            # the local one links it there, an object store downloads it.
            try:
                self.storage.get_to_file(job.input_key, path)
            except NotFound:
                raise ProcessorError(ErrorCode.INPUT_MISSING, "the input file is missing",
                                     retryable=False) from None

        state = AttemptState(work_dir, fetch_input)
        info = InputInfo(job.input_filename, job.input_size, job.input_sha256, job.media_type,
                         job.declared_type)
        results: dict[str, Any] = {}
        # Whatever a step raises ends the attempt: run() hands it to _ended_by.
        options = self.registry.validate(job.pipeline, job.options)
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
        self._commit(claim, result, state)

    def _commit(self, claim: Claim, result: Any, state: AttemptState) -> None:
        job = claim.job
        produced: list[Artifact] = []
        children: list[NewJob] = []
        try:
            for item in state.produced.values():
                size, sha = file_digest(item.path)
                key = artifact_key(job.id, claim.token, item.name)
                self.storage.put_from_file(item.path, key)
                produced.append(Artifact(job.id, item.name, item.media_type, size, sha, key))
            for child in state.children:
                size, sha = file_digest(child.path)
                media_type = sniff_file(child.path, child.filename)
                children.append(NewJob(
                    id=child.id, pipeline=child.pipeline, options=child.options,
                    input_key=input_key(child.id), input_filename=child.filename[:300],
                    input_size=size, input_sha256=sha, media_type=media_type,
                    parent_id=job.id, max_attempts=job.max_attempts, timeout_s=job.timeout_s,
                    priority=job.priority,
                ))
                self.storage.put_from_file(child.path, input_key(child.id))
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
            return
        # Leftovers of earlier, killed attempts (even an attempt 1 may follow some: a retry
        # starts counting again).
        ours = attempt_prefix(job.id, claim.token)
        for key in self.storage.keys(artifacts_prefix(job.id)):
            if not key.startswith(ours):
                self.storage.delete(key)

    def _drop_outputs(self, job_id: str, token: str, children: list[NewJob]) -> None:
        try:
            self.storage.delete_prefix(attempt_prefix(job_id, token))
            for child in children:
                self.storage.delete(child.input_key)
        except Exception:
            log.warning("job %s: could not remove the outputs of attempt %s", job_id, token[:12],
                        exc_info=True)


def worker_main(settings_json: str, worker_id: str, pipe: Connection) -> None:
    """Entry point of a worker process (spawned by the supervisor)."""
    _die_with_parent()
    settings = Settings.model_validate_json(settings_json)
    _cap_memory(settings.worker_memory_mb)
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    logging.basicConfig(level=settings.log_level,
                        format=f"%(asctime)s {worker_id} %(levelname)s %(name)s: %(message)s")
    worker = Worker(settings, worker_id, pipe)

    def _stop(_signum: int, _frame: Any) -> None:
        # Finish the current job, claim no more.
        worker.stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker.serve()

