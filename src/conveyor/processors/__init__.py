"""Processors: the interface, the registry and the built-ins."""

from conveyor.processors.base import Context, InputInfo, NoOptions, Processor
from conveyor.processors.registry import (
    BadOptions,
    Registry,
    UnknownPipeline,
    build_registry,
    default_registry,
    processor,
)

__all__ = [
    "BadOptions",
    "Context",
    "InputInfo",
    "NoOptions",
    "Processor",
    "Registry",
    "UnknownPipeline",
    "build_registry",
    "default_registry",
    "processor",
]
