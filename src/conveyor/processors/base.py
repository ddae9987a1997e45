"""The processor interface: what a plug-in author writes against.

A processor is a plain callable ``fn(ctx: Context) -> JSON`` registered under a name with a
pydantic options model::

    from pydantic import BaseModel
    from conveyor.processors import Context, processor

    class Opts(BaseModel):
        words: int = 10

    @processor("head", options=Opts, description="First words of a text file", accepts=["text/*"])
    def head(ctx: Context) -> dict[str, object]:
        text = ctx.input_path.read_text(errors="replace")
        with ctx.artifact("head.txt", "text/plain") as out:
            out.write(" ".join(text.split()[: ctx.options.words]).encode())
        return {"words": ctx.options.words}

It runs inside a worker process. Raise :class:`conveyor.errors.ProcessorError` to fail the job
with a stable code; any other exception fails the attempt as ``processor_error`` (retryable).

This module knows no registry: :func:`define` makes a :class:`Processor` without registering it
(the built-ins use it; :func:`conveyor.processors.builtin.build_registry` collects them), and the
``@processor`` decorator of :mod:`conveyor.processors.registry` is :func:`define` plus a
registration.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import BaseModel, ConfigDict

from conveyor.settings import (
    DEFAULT_ARCHIVE_MAX_BYTES,
    DEFAULT_ARCHIVE_MAX_ENTRIES,
    DEFAULT_ARCHIVE_MAX_RATIO,
    DEFAULT_MAX_IMAGE_PIXELS,
    Settings,
)

if TYPE_CHECKING:
    from conveyor.processors.registry import Registry

JSON = Any


@dataclass(frozen=True, slots=True)
class ProcessorLimits:
    """The caps built-in processors enforce, handed to them as ``ctx.limits``.

    They are :class:`conveyor.settings.Settings` fields (``CONVEYOR_MAX_IMAGE_PIXELS``,
    ``CONVEYOR_ARCHIVE_MAX_{ENTRIES,BYTES,RATIO}``); this small object is what a processor
    sees, so processors never read the environment themselves.
    """

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    archive_max_entries: int = DEFAULT_ARCHIVE_MAX_ENTRIES
    archive_max_bytes: int = DEFAULT_ARCHIVE_MAX_BYTES
    archive_max_ratio: float = DEFAULT_ARCHIVE_MAX_RATIO
    #: Not a cap but the ``image`` processor's pixel engine (``CONVEYOR_IMAGE_ENGINE``).
    image_engine: str = "vips"

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessorLimits:
        """The limits configured in ``settings``."""
        return cls(
            max_image_pixels=settings.max_image_pixels,
            archive_max_entries=settings.archive_max_entries,
            archive_max_bytes=settings.archive_max_bytes,
            archive_max_ratio=settings.archive_max_ratio,
            image_engine=settings.image_engine,
        )


class NoOptions(BaseModel):
    """Options model for processors that take none: any key is refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class InputInfo:
    filename: str
    size: int
    sha256: str
    media_type: str
    declared_type: str | None


class Context(ABC):
    """What a processor receives. Implemented by the worker runner (and by test harnesses)."""

    job_id: str
    attempt: int
    input_path: Path
    input: InputInfo
    options: Any
    logger: logging.Logger
    #: A private scratch directory, removed after the attempt.
    work_dir: Path
    #: The processors this context can run: ``delegate`` looks names up here.
    registry: Registry
    #: Caps from the settings (defaults for a context that sets none).
    limits: ProcessorLimits = ProcessorLimits()

    @abstractmethod
    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress in [0, 1]. Stored (throttled) and sent as ``job.progress`` events."""

    @abstractmethod
    def artifact(self, name: str, media_type: str) -> AbstractContextManager[BinaryIO]:
        """Open a writer for an output file. It is published only if the attempt succeeds."""

    @abstractmethod
    def artifact_from_path(self, name: str, media_type: str, path: Path) -> None:
        """Publish an existing file (moved, not copied, when it can be) as an artifact."""

    @abstractmethod
    def cancelled(self) -> bool:
        """True once the job was cancelled: stop at the next convenient point."""

    @abstractmethod
    def add_child(
        self, path: Path, filename: str, *, pipeline: str = "auto", options: JSON = None
    ) -> str:
        """Queue ``path`` as a child job (created only if this attempt succeeds). Returns its id."""

    @abstractmethod
    def delegate(self, name: str, options: JSON = None) -> JSON:
        """Run another registered processor on the same input within this attempt."""


ProcessorFn = Callable[[Context], JSON]

#: Types the sniffer gives when it cannot tell: the processor itself decides (it may go by the
#: file's name, or fail with ``empty_file``), so ``accepts`` does not refuse them.
UNKNOWN_TYPES = frozenset({"", "application/octet-stream", "application/x-empty"})


def accepts_type(patterns: Iterable[str], media_type: str | None) -> bool:
    """Whether ``media_type`` matches one of ``patterns``: ``*/*``, ``text/*`` or exact.

    Parameters (``; charset=...``) and case are ignored; an unknown type is accepted.
    """
    kind = (media_type or "").split(";")[0].strip().lower()
    if kind in UNKNOWN_TYPES:
        return True
    major = kind.split("/")[0]
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern in ("*/*", "*", kind) or (pattern.endswith("/*") and pattern[:-2] == major):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Processor:
    name: str
    fn: ProcessorFn
    options: type[BaseModel] = NoOptions
    description: str = ""
    accepts: tuple[str, ...] = ("*/*",)
    #: The processor's own version: bump it when the same input and options would give another
    #: result. Jobs record it, and ``reuse`` only reuses a result made by the same version.
    version: str = "1"
    #: Module path to import lazily; used by the registry to keep heavy imports out of the API.
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, ctx: Context) -> JSON:
        return self.fn(ctx)

    def takes(self, media_type: str | None) -> bool:
        """Whether this processor accepts a file sniffed as ``media_type`` (see accepts_type)."""
        return accepts_type(self.accepts, media_type)

    def validate_options(self, raw: JSON) -> BaseModel:
        return self.options.model_validate(raw or {})


def define(
    name: str,
    *,
    options: type[BaseModel] = NoOptions,
    description: str = "",
    accepts: Iterable[str] = ("*/*",),
    version: str = "1",
) -> Callable[[ProcessorFn], Processor]:
    """Make ``fn`` a :class:`Processor` named ``name``, registered nowhere.

    The description defaults to the first line of the function's docstring.
    """

    def decorate(fn: ProcessorFn) -> Processor:
        return Processor(
            name=name,
            fn=fn,
            options=options,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            accepts=tuple(accepts),
            version=version,
        )

    return decorate
