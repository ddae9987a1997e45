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

from conveyor.errors import LeaseLost, ProcessorError
from conveyor.models import ErrorCode, JobError
from conveyor.processors.base import InputInfo
from conveyor.processors.registry import BadOptions, Registry, UnknownPipeline, build_registry
from conveyor.runner.context import AttemptState, RunContext, file_digest, sniff_file
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
from conveyor.store.notify import JOBS

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
    def __init__(self, settings: Settings, worker_id: str, pipe: Connection | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.pipe = pipe
        self.store = Store(
            settings.db_url,
            run_dir=settings.run_dir,
            retention_s=settings.retention.total_seconds(),
            default_webhook_url=settings.webhook_url,
            durable=False,
        )
        # Workers are synchronous: each storage call runs to completion (see storage.blocking).
        self.storage = BlockingStorage(from_url(settings))
        self.registry: Registry = build_registry(settings.processors)
        self.policy = RetryPolicy(settings.retry_base_s, settings.retry_max_s)
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
                claim = self.store.claim_next(self.worker_id, self.settings.lease_s)
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
        except MemoryError:
            self._fail(claim, JobError(ErrorCode.MEMORY_EXCEEDED, "the job ran out of memory "
                                       f"(cap {self.settings.worker_memory_mb} MiB)", False))
            return True
        except LeaseLost:
            log.info("job %s: lease lost, outcome dropped", job.id)
        finally:
            if work_dir.exists():
                shutil.rmtree(work_dir, ignore_errors=True)
        return False

    def _fail(self, claim: Claim, error: JobError) -> None:
        try:
            self.store.fail_attempt(claim.job.id, claim.token, error, self.policy)
        except LeaseLost:
            log.info("job %s: lease lost before recording %s", claim.job.id, error.code)

    def _run(self, claim: Claim, work_dir: Path) -> None:
        job = claim.job
        try:
            pipe = self.registry.pipeline(job.pipeline)
        except UnknownPipeline as exc:
            self._fail(claim, JobError(ErrorCode.UNKNOWN_PIPELINE, str(exc), False))
            return
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
        try:
            options = self.registry.validate(job.pipeline, job.options)
            for step in pipe.steps:
                proc = self.registry.processors[step]
                raw = options if pipe.single else options.get(step)
                ctx = RunContext(
                    store=self.store, registry=self.registry, job_id=job.id, token=claim.token,
                    attempt=claim.attempt, input=info,
                    options=proc.validate_options(raw), work_dir=work_dir, state=state,
                    progress_interval_s=self.settings.progress_interval_s,
                )
                results[step] = proc(ctx)
                # A cancel that arrives now is still honoured: complete() checks it in its
                # transaction, and cancellation wins.
        except ProcessorError as exc:
            if exc.code == ErrorCode.CANCELLED:
                self.store.finish_cancelled(job.id, claim.token)
            else:
                self._fail(claim, JobError(exc.code, exc.message, exc.retryable))
            return
        except BadOptions as exc:
            self._fail(claim, JobError(ErrorCode.BAD_OPTIONS, str(exc), False))
            return
        except (MemoryError, LeaseLost):
            raise
        except Exception as exc:
            log.exception("job %s: processor crashed", job.id)
            self._fail(claim, JobError(ErrorCode.PROCESSOR_ERROR,
                                       f"{type(exc).__name__}: {exc}", True))
            return
        result = results[pipe.steps[0]] if pipe.single else results
        self._commit(claim, result, state)

    def _commit(self, claim: Claim, result: Any, state: AttemptState) -> None:
        job = claim.job
        produced: list[Artifact] = []
        for item in state.produced.values():
            size, sha = file_digest(item.path)
            key = artifact_key(job.id, claim.token, item.name)
            self.storage.put_from_file(item.path, key)
            produced.append(Artifact(job.id, item.name, item.media_type, size, sha, key))
        children: list[NewJob] = []
        for child in state.children:
            size, sha = file_digest(child.path)
            media_type = sniff_file(child.path, child.filename)
            self.storage.put_from_file(child.path, input_key(child.id))
            children.append(
                NewJob(
                    id=child.id, pipeline=child.pipeline, options=child.options,
                    input_key=input_key(child.id), input_filename=child.filename[:300],
                    input_size=size, input_sha256=sha, media_type=media_type,
                    parent_id=job.id, max_attempts=job.max_attempts, timeout_s=job.timeout_s,
                    priority=job.priority,
                )
            )
        try:
            self.store.complete(job.id, claim.token, result, produced, children)
        except LeaseLost:
            # A newer attempt owns the job: nothing of ours may remain.
            self.storage.delete_prefix(attempt_prefix(job.id, claim.token))
            for new_child in children:
                self.storage.delete(new_child.input_key)
            raise
        # Leftovers of earlier, killed attempts (even an attempt 1 may follow some: a retry
        # starts counting again).
        ours = attempt_prefix(job.id, claim.token)
        for key in self.storage.keys(artifacts_prefix(job.id)):
            if not key.startswith(ours):
                self.storage.delete(key)


def worker_main(settings_json: str, worker_id: str, pipe: Connection) -> None:
    """Entry point of a worker process (spawned by the supervisor)."""
    _die_with_parent()
    settings = Settings.model_validate_json(settings_json)
    _cap_memory(settings.worker_memory_mb)
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    logging.basicConfig(level=os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s {worker_id} %(levelname)s %(name)s: %(message)s")
    worker = Worker(settings, worker_id, pipe)

    def _stop(_signum: int, _frame: Any) -> None:
        # Finish the current job, claim no more.
        worker.stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker.serve()

