"""The registry of processors and pipelines.

The registry knows no processor by itself: :func:`conveyor.processors.builtin.build_registry`
fills one with the built-ins, the entry-point group ``conveyor.processors`` and the ``module``
or ``module:attr`` paths from ``CONVEYOR_PROCESSORS`` / ``--processors``. A later registration
with the same name replaces an earlier one (so a plug-in can override a built-in).

A pipeline is a named list of steps. Every processor is also a one-step pipeline of its own
name, whose options are that processor's options. A multi-step pipeline takes options keyed by
step name, and its result is keyed by step name too.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from conveyor.errors import PluginLoadError
from conveyor.processors.base import JSON, NoOptions, Processor, ProcessorFn, define

ENTRY_POINT_GROUP = "conveyor.processors"


class UnknownPipeline(LookupError):
    pass


class BadOptions(ValueError):
    def __init__(self, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    steps: tuple[str, ...]
    description: str = ""

    @property
    def single(self) -> bool:
        return len(self.steps) == 1 and self.steps[0] == self.name


class Registry:
    def __init__(self) -> None:
        self.processors: dict[str, Processor] = {}
        self.pipelines: dict[str, Pipeline] = {}

    def add(self, proc: Processor) -> Processor:
        self.processors[proc.name] = proc
        self.pipelines[proc.name] = Pipeline(proc.name, (proc.name,), proc.description)
        return proc

    def add_pipeline(self, name: str, steps: Iterable[str], description: str = "") -> Pipeline:
        steps = tuple(steps)
        missing = [s for s in steps if s not in self.processors]
        if missing or not steps:
            raise UnknownPipeline(f"pipeline {name!r} names unknown steps {missing}")
        pipe = Pipeline(name, steps, description)
        self.pipelines[name] = pipe
        return pipe

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            raise UnknownPipeline(f"no pipeline named {name!r}") from None

    def validate(self, name: str, raw: JSON) -> dict[str, Any]:
        """Validate ``raw`` options for pipeline ``name``; return them as plain JSON."""
        pipe = self.pipeline(name)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise BadOptions("options must be a JSON object")
        try:
            if pipe.single:
                return self.processors[name].validate_options(raw).model_dump(mode="json")
            unknown = set(raw) - set(pipe.steps)
            if unknown:
                raise BadOptions(f"unknown steps in options: {sorted(unknown)}")
            return {
                step: self.processors[step].validate_options(raw.get(step)).model_dump(mode="json")
                for step in pipe.steps
            }
        except ValidationError as exc:
            raise BadOptions(
                "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}"
                    for e in exc.errors()
                ),
                errors=exc.errors(include_url=False, include_context=False),
            ) from None

    def version(self, name: str) -> str:
        """The version of pipeline ``name``: its processor's, or ``step=version`` per step.

        ``auto`` routes by the input's type, so its version covers every processor it can
        route to: a new version of any of them changes it.
        """
        pipe = self.pipeline(name)
        if pipe.single and name != "auto":
            return self.processors[name].version
        steps = sorted(self.processors) if name == "auto" else pipe.steps
        return ",".join(f"{step}={self.processors[step].version}" for step in steps)

    def options_schema(self, name: str) -> dict[str, Any]:
        pipe = self.pipeline(name)
        if pipe.single:
            return self.processors[name].options.model_json_schema()
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {s: self.processors[s].options.model_json_schema() for s in pipe.steps},
        }

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name in sorted(self.pipelines):
            pipe = self.pipelines[name]
            accepts: list[str] = list(self.processors[pipe.steps[0]].accepts)
            out.append(
                {
                    "name": name,
                    "description": pipe.description,
                    "steps": list(pipe.steps),
                    "accepts": accepts,
                    "options_schema": self.options_schema(name),
                    "version": self.version(name),
                }
            )
        return out

    def load(self, spec: str) -> None:
        """Load ``module`` (its import registers things) or ``module:attr``.

        The working directory is on the import path, as uvicorn does for its app, so
        ``CONVEYOR_PROCESSORS=myprocs`` finds ``./myprocs.py``. Any failure is one
        :class:`PluginLoadError` naming the entry, not an import traceback.
        """
        module_name, _, attr = spec.partition(":")
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name.strip())
            if not attr:
                return
            obj: Any = module
            for part in attr.strip().split("."):
                obj = getattr(obj, part)
            self._register_object(obj, spec)
        except PluginLoadError:
            raise
        except Exception as exc:  # whatever the plug-in's import raises (SyntaxError too)
            raise PluginLoadError(f"cannot load the processors {spec!r}: "
                                  f"{type(exc).__name__}: {exc}") from exc

    def _register_object(self, obj: Any, spec: str) -> None:
        if isinstance(obj, Processor):
            if self.processors.get(obj.name) is not obj:
                self.add(obj)
        elif isinstance(obj, list | tuple):
            for item in obj:
                self._register_object(item, spec)
        elif callable(obj) and not isinstance(obj, type):
            name = getattr(obj, "__name__", spec)
            self.add(Processor(name=name, fn=obj))
        else:
            raise TypeError(f"{spec} is not a processor")

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self._register_object(ep.load(), ep.value)


#: The registry the ``@processor`` decorator writes into.
default_registry = Registry()


def processor(
    name: str,
    *,
    options: type[BaseModel] = NoOptions,
    description: str = "",
    accepts: Iterable[str] = ("*/*",),
    registry: Registry | None = None,
    version: str = "1",
) -> Callable[[ProcessorFn], Processor]:
    """Register ``fn`` as a processor named ``name`` (in ``registry``, else the default one).

    ``version`` (default "1") is recorded on each job; bump it when a change of the processor
    would give another result for the same input and options (``reuse`` then misses).
    """

    def decorate(fn: ProcessorFn) -> Processor:
        proc = define(name, options=options, description=description, accepts=accepts,
                      version=version)(fn)
        (registry or default_registry).add(proc)
        return proc

    return decorate
