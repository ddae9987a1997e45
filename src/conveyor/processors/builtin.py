"""Imports the built-in processor modules, whose decorators register them.

Each module imports its heavy library inside the processor function, so importing this module
(which the API process does, to list pipelines) stays cheap.
"""

from __future__ import annotations

from conveyor.processors import (  # noqa: F401
    archive,
    auto,
    image,
    media,
    pdf,
    probe,
    table,
)

__all__: list[str] = []
