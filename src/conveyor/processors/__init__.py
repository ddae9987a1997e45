"""Processors: the interface, the registry and the built-ins.

``build_registry`` and ``builtin_registry`` (from :mod:`conveyor.processors.builtin`) are loaded
on first use, so ``import conveyor`` does not import every built-in processor module.
"""

from typing import TYPE_CHECKING, Any

from conveyor.processors.base import (
    Context,
    InputInfo,
    NoOptions,
    Processor,
    ProcessorLimits,
    define,
)
from conveyor.processors.names import BadArtifactName, check_artifact_name
from conveyor.processors.registry import (
    BadOptions,
    Registry,
    UnknownPipeline,
    default_registry,
    processor,
)

if TYPE_CHECKING:
    from conveyor.processors.builtin import build_registry, builtin_registry

__all__ = [
    "BadArtifactName",
    "BadOptions",
    "Context",
    "InputInfo",
    "NoOptions",
    "Processor",
    "ProcessorLimits",
    "Registry",
    "UnknownPipeline",
    "build_registry",
    "builtin_registry",
    "check_artifact_name",
    "default_registry",
    "define",
    "processor",
]


def __getattr__(name: str) -> Any:
    if name in ("build_registry", "builtin_registry"):
        from conveyor.processors import builtin

        return getattr(builtin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
