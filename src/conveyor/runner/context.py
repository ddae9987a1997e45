"""The :class:`~conveyor.processors.Context` a worker hands to processors."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ulid import ULID

from conveyor.errors import LeaseLost, ProcessorError
from conveyor.processors.base import JSON, Context, InputInfo, ProcessorLimits
from conveyor.processors.names import check_artifact_name
from conveyor.processors.registry import BadOptions, Registry, UnknownPipeline
from conveyor.processors.sniff import read_head, sniff
from conveyor.store import Store


@dataclass(slots=True)
class Produced:
    name: str
    media_type: str
    path: Path


@dataclass(slots=True)
class ChildSpec:
    id: str
    path: Path
    filename: str
    pipeline: str
    options: Any


def sniff_file(path: Path, filename: str | None = None) -> str:
    return sniff(read_head(str(path)), filename)


class AttemptState:
    """What one attempt produced, shared by the context and the contexts it delegates to."""

    def __init__(self, work_dir: Path, fetch_input: Callable[[Path], None]) -> None:
        self.work_dir = work_dir
        self.produced: dict[str, Produced] = {}
        self.children: list[ChildSpec] = []
        self._fetch_input = fetch_input
        self._input_path: Path | None = None

    @property
    def input_path(self) -> Path:
        """The job's input as a file of the work dir, brought from storage on first use.

        Lazily: a processor that never opens its input (noop, or one that fails early) costs
        no directory, link or download."""
        if self._input_path is None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            path = self.work_dir / "input"
            self._fetch_input(path)
            self._input_path = path
        return self._input_path

    @property
    def out_dir(self) -> Path:
        # Made on first use: most no-op and probe jobs write no artifact.
        path = self.work_dir / "out"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def child_dir(self) -> Path:
        path = self.work_dir / "children"
        path.mkdir(parents=True, exist_ok=True)
        return path



class RunContext(Context):
    def __init__(
        self,
        *,
        store: Store,
        registry: Registry,
        job_id: str,
        token: str,
        attempt: int,
        input: InputInfo,
        options: Any,
        work_dir: Path,
        state: AttemptState,
        progress_interval_s: float = 0.1,
        limits: ProcessorLimits | None = None,
    ) -> None:
        self.store = store
        self.limits = limits or ProcessorLimits()
        self.registry = registry
        self.job_id = job_id
        self.token = token
        self.attempt = attempt
        self.input = input
        self.options = options
        self._work_dir = work_dir
        self.state = state
        self.logger = logging.getLogger(f"conveyor.job.{job_id}")
        self._progress_interval = progress_interval_s
        self._last_progress = 0.0
        self._cancelled = False
        self._last_cancel_check = 0.0

    @property
    def input_path(self) -> Path:  # type: ignore[override]
        return self.state.input_path

    @property
    def work_dir(self) -> Path:  # type: ignore[override]
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    def progress(self, fraction: float, message: str | None = None) -> None:
        now = time.monotonic()
        if now - self._last_progress < self._progress_interval and fraction < 1.0:
            return
        self._last_progress = now
        try:
            self.store.attempts.set_progress(self.job_id, self.token, fraction, message)
        except LeaseLost:
            self._cancelled = True

    @contextlib.contextmanager
    def _writer(self, name: str, media_type: str) -> Iterator[BinaryIO]:
        path = self._claim_name(name)
        with open(path, "wb") as fh:
            yield fh
        self.state.produced[name] = Produced(name, media_type, path)

    def artifact(self, name: str, media_type: str) -> contextlib.AbstractContextManager[BinaryIO]:
        check_artifact_name(name)  # here, not when the writer is entered
        return self._writer(name, media_type)

    def artifact_from_path(self, name: str, media_type: str, path: Path) -> None:
        target = self._claim_name(name)
        shutil.move(path, target)
        self.state.produced[name] = Produced(name, media_type, target)

    def _claim_name(self, name: str) -> Path:
        return self.state.out_dir / check_artifact_name(name)

    def cancelled(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= 0.5:
            self._last_cancel_check = now
            self._cancelled = self.store.attempts.cancel_requested(self.job_id, self.token)
        return self._cancelled

    def add_child(
        self, path: Path, filename: str, *, pipeline: str = "auto", options: JSON = None
    ) -> str:
        try:
            validated = self.registry.validate(pipeline, options)
        except (UnknownPipeline, BadOptions) as exc:
            raise ProcessorError("bad_child", f"child job refused: {exc}") from exc
        child_id = str(ULID())
        target = self.state.child_dir / child_id
        shutil.move(path, target)
        self.state.children.append(ChildSpec(child_id, target, filename, pipeline, validated))
        return child_id

    def delegate(self, name: str, options: JSON = None) -> JSON:
        try:
            proc = self.registry.processors[name]
            validated = proc.validate_options(options)
        except KeyError:
            raise ProcessorError("unknown_pipeline", f"no processor named {name!r}") from None
        except Exception as exc:
            raise ProcessorError("bad_options", str(exc)) from exc
        sub = RunContext(
            store=self.store,
            registry=self.registry,
            job_id=self.job_id,
            token=self.token,
            attempt=self.attempt,
            input=self.input,
            options=validated,
            work_dir=self._work_dir,
            state=self.state,
            progress_interval_s=self._progress_interval,
            limits=self.limits,
        )
        sub._last_progress = self._last_progress
        return proc(sub)
