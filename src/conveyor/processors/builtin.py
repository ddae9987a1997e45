"""The built-in processors, and the one function that assembles a registry.

The built-in modules define their processors with :func:`~conveyor.processors.base.define`,
which registers nothing: they know no registry, and the registry knows none of them. This module
is the only place that lists them. Each one imports its heavy library inside the processor
function, so importing this module (which the API process does, to list pipelines) stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable

from conveyor.processors import archive, auto, image, media, noop, pdf, probe, table
from conveyor.processors.base import Processor
from conveyor.processors.registry import Registry, default_registry

#: In registration order; ``media`` only when PyAV is installed.
BUILTINS: tuple[Processor, ...] = tuple(
    proc
    for proc in (
        noop.noop, probe.probe, image.image, pdf.pdf, table.table, archive.archive, media.MEDIA,
        auto.auto,
    )
    if proc is not None
)

__all__ = ["BUILTINS", "build_registry", "builtin_registry"]


def builtin_registry() -> Registry:
    """A new registry holding the built-ins only (no plug-ins)."""
    registry = Registry()
    for proc in BUILTINS:
        registry.add(proc)
    return registry


_loaded_specs: set[tuple[str, ...]] = set()
_builtins_added = False


def build_registry(specs: Iterable[str] = ()) -> Registry:
    """The default registry (the one ``@processor`` writes into) with the built-ins, the
    entry-point plug-ins and the ``module`` / ``module:attr`` ``specs`` loaded. Idempotent.

    Built-ins come first: a plug-in registered under a built-in's name replaces it, even one
    whose module was imported before this call.
    """
    global _builtins_added
    if not _builtins_added:
        for proc in BUILTINS:
            if proc.name not in default_registry.processors:
                default_registry.add(proc)
        _builtins_added = True
    key = tuple(s for s in specs if s.strip())
    if key not in _loaded_specs:
        default_registry.load_entry_points()
        for spec in key:
            default_registry.load(spec)
        _loaded_specs.add(key)
    return default_registry
