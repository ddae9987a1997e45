"""The ``noop`` processor: does nothing. Measures the engine's own overhead (see bench/)."""

from __future__ import annotations

from conveyor.processors.base import Context, define


@define("noop", description="Do nothing (for benchmarks and smoke tests)", accepts=["*/*"])
def noop(ctx: Context) -> dict[str, bool]:
    return {"ok": True}
