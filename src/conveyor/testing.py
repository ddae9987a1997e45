"""Run processors in-process, without a server, a database or a worker: for tests and plug-ins.

::

    from conveyor.testing import run_processor

    run = run_processor("image", "cat.jpg", {"sizes": [256]})
    run.result["width"], run.artifacts["w256.webp"], run.progress[-1]

:class:`LocalContext` implements :class:`~conveyor.processors.base.Context` on the local disk:
artifacts are collected into a directory, progress calls and children are recorded, and
``delegate`` validates options through the registry and runs the other processor with a context
that shares the same artifact sink. A :class:`~conveyor.errors.ProcessorError` raised by the
processor propagates unchanged, so a test can assert its ``code``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel

from conveyor.digest import file_digest
from conveyor.processors.base import JSON, Context, InputInfo, ProcessorLimits
from conveyor.processors.builtin import build_registry
from conveyor.processors.names import check_artifact_name
from conveyor.processors.registry import Registry
from conveyor.processors.sniff import read_head, sniff
from conveyor.settings import Settings

__all__ = ["Child", "IsolatedOutcome", "LocalContext", "RunResult", "run_isolated", "run_processor"]


@dataclass(frozen=True, slots=True)
class Child:
    """A child job queued by a processor (``ctx.add_child``)."""

    id: str
    path: Path
    filename: str
    pipeline: str
    options: JSON


@dataclass(slots=True)
class _Sink:
    """What a context and the contexts it delegates to share."""

    artifact_dir: Path
    children_dir: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    media_types: dict[str, str] = field(default_factory=dict)
    progress: list[tuple[float, str | None]] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    cancelled: bool = False


class LocalContext(Context):
    """A :class:`Context` backed by local directories.

    ``work_dir`` must exist and is not removed here (``run_processor`` manages its own).
    Artifacts land in ``artifact_dir``; child inputs are moved into ``children_dir`` because
    the work dir is scratch space. ``limits`` default to those of ``Settings()`` (so the
    ``CONVEYOR_*`` caps of the environment apply, as in a worker). Artifact names follow the
    worker's rule (:func:`conveyor.processors.names.check_artifact_name`).
    """

    def __init__(
        self,
        input_path: Path | str,
        *,
        options: BaseModel,
        work_dir: Path,
        artifact_dir: Path,
        children_dir: Path | None = None,
        filename: str | None = None,
        media_type: str | None = None,
        registry: Registry | None = None,
        limits: ProcessorLimits | None = None,
        job_id: str = "local",
        _sink: _Sink | None = None,
        _input: InputInfo | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempt = 1
        self.input_path = Path(input_path)
        self.options = options
        self.work_dir = Path(work_dir)
        self.logger = logging.getLogger(f"conveyor.processor.{job_id}")
        self.registry = registry or build_registry()
        self.limits = limits or ProcessorLimits.from_settings(Settings())
        self._sink = _sink or _Sink(
            artifact_dir=Path(artifact_dir),
            children_dir=Path(children_dir or Path(artifact_dir).parent / "children"),
        )
        self._sink.artifact_dir.mkdir(parents=True, exist_ok=True)
        self.input = _input or _input_info(self.input_path, filename, media_type)
        self._delegations = 0

    # -- what tests read -------------------------------------------------------------------
    @property
    def artifacts(self) -> dict[str, Path]:
        return self._sink.artifacts

    @property
    def artifact_types(self) -> dict[str, str]:
        return self._sink.media_types

    @property
    def progress_calls(self) -> list[tuple[float, str | None]]:
        return self._sink.progress

    @property
    def children(self) -> list[Child]:
        return self._sink.children

    def cancel(self) -> None:
        """Make ``cancelled()`` return True from now on."""
        self._sink.cancelled = True

    # -- the Context interface -------------------------------------------------------------
    def progress(self, fraction: float, message: str | None = None) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction {fraction} outside [0, 1]")
        self._sink.progress.append((fraction, message))

    @contextmanager
    def _writer(self, name: str, media_type: str) -> Iterator[BinaryIO]:
        target = self._sink.artifact_dir / name
        with open(target, "wb") as fh:
            yield fh
        self._publish(name, media_type, target)

    def artifact(self, name: str, media_type: str) -> AbstractContextManager[BinaryIO]:
        check_artifact_name(name)  # here, as the worker does, not when the writer is entered
        return self._writer(name, media_type)

    def artifact_from_path(self, name: str, media_type: str, path: Path) -> None:
        check_artifact_name(name)
        target = self._sink.artifact_dir / name
        shutil.move(str(path), target)
        self._publish(name, media_type, target)

    def _publish(self, name: str, media_type: str, target: Path) -> None:
        self._sink.artifacts[name] = target
        self._sink.media_types[name] = media_type

    def cancelled(self) -> bool:
        return self._sink.cancelled

    def add_child(
        self, path: Path, filename: str, *, pipeline: str = "auto", options: JSON = None
    ) -> str:
        self.registry.validate(pipeline, options)  # the real runner refuses bad options too
        child_id = f"{self.job_id}.{len(self._sink.children) + 1}"
        self._sink.children_dir.mkdir(parents=True, exist_ok=True)
        kept = self._sink.children_dir / child_id
        shutil.move(str(path), kept)
        self._sink.children.append(Child(child_id, kept, filename, pipeline, options))
        return child_id

    def delegate(self, name: str, options: JSON = None) -> JSON:
        proc = self.registry.processors[name]
        validated = proc.validate_options(self.registry.validate(name, options))
        self._delegations += 1
        sub_work = self.work_dir / f"delegate-{self._delegations}-{name}"
        sub_work.mkdir()
        sub = LocalContext(
            self.input_path,
            options=validated,
            work_dir=sub_work,
            artifact_dir=self._sink.artifact_dir,
            registry=self.registry,
            limits=self.limits,
            job_id=self.job_id,
            _sink=self._sink,
            _input=self.input,
        )
        return proc(sub)


def _input_info(path: Path, filename: str | None, media_type: str | None) -> InputInfo:
    size, sha256 = file_digest(path)
    name = filename or path.name
    return InputInfo(
        filename=name,
        size=size,
        sha256=sha256,
        media_type=media_type or sniff(read_head(str(path)), name),
        declared_type=None,
    )


@dataclass(frozen=True, slots=True)
class RunResult:
    """What :func:`run_processor` returns."""

    result: JSON
    artifacts: dict[str, Path]
    progress: list[tuple[float, str | None]]
    children: list[Child]
    artifact_types: dict[str, str] = field(default_factory=dict)


def run_processor(
    name: str,
    path: Path | str,
    options: JSON = None,
    filename: str | None = None,
    *,
    out_dir: Path | str | None = None,
    media_type: str | None = None,
    registry: Registry | None = None,
    limits: ProcessorLimits | None = None,
) -> RunResult:
    """Run processor ``name`` on ``path`` in this process and collect what it produced.

    Options are validated as the API would (``BadOptions`` on a bad key). Artifacts go to
    ``out_dir/artifacts`` and child inputs to ``out_dir/children`` (``out_dir`` defaults to a
    new temporary directory that the caller owns); the scratch work dir is removed afterwards.
    ``limits`` (pixel and archive caps) default to those of ``Settings()``, i.e. the
    ``CONVEYOR_*`` environment.
    """
    reg = registry or build_registry()
    proc = reg.processors[name]
    validated = proc.validate_options(reg.validate(name, options))
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="conveyor-run-"))
    with tempfile.TemporaryDirectory(prefix="conveyor-work-") as work:
        ctx = LocalContext(
            path,
            options=validated,
            work_dir=Path(work),
            artifact_dir=out / "artifacts",
            children_dir=out / "children",
            filename=filename,
            media_type=media_type,
            registry=reg,
            limits=limits,
        )
        result = proc(ctx)
    return RunResult(
        result=result,
        artifacts=dict(ctx.artifacts),
        progress=list(ctx.progress_calls),
        children=list(ctx.children),
        artifact_types=dict(ctx.artifact_types),
    )


@dataclass(frozen=True, slots=True)
class IsolatedOutcome:
    """How a :func:`run_isolated` run ended: ``result`` or a ``code`` (``ProcessorError`` code,
    ``crashed``, ``timeout`` or an exception class name)."""

    ok: bool
    result: JSON = None
    code: str | None = None
    message: str = ""


def _isolated_child(
    conn: Any, name: str, path: str, options: JSON, filename: str | None, out_dir: str,
    memory_mb: int, limits: ProcessorLimits | None,
) -> None:
    import resource

    from conveyor.errors import ProcessorError

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        run = run_processor(name, path, options, filename, out_dir=out_dir, limits=limits)
        conn.send(("ok", run.result, ""))
    except ProcessorError as exc:
        conn.send(("error", exc.code, exc.message))
    except BaseException as exc:  # MemoryError included: report it rather than die
        conn.send(("error", type(exc).__name__, str(exc)))
    finally:
        conn.close()


def run_isolated(
    name: str,
    path: Path | str,
    options: JSON = None,
    filename: str | None = None,
    *,
    out_dir: Path | str,
    memory_mb: int = 1536,
    timeout: float = 100.0,
    limits: ProcessorLimits | None = None,
) -> IsolatedOutcome:
    """Run a processor in a fresh (spawned) process with an address-space cap (RLIMIT_AS).

    For hostile-input tests: a bomb that escapes the processor's own checks ends as
    ``MemoryError``/``crashed`` here instead of taking the test run down.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_isolated_child,
        args=(child, name, str(path), options, filename, str(out_dir), memory_mb, limits),
    )
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.kill()
            return IsolatedOutcome(False, code="timeout", message=f"over {timeout}s")
        try:
            kind, payload, message = parent.recv()
        except EOFError:
            proc.join(5)
            return IsolatedOutcome(False, code="crashed", message=f"exit {proc.exitcode}")
    finally:
        parent.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if kind == "ok":
        return IsolatedOutcome(True, result=payload)
    return IsolatedOutcome(False, code=payload, message=message)
