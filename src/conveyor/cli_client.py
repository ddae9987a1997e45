"""Client-side commands (submit, jobs, pipelines); filled in with the Python client."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the client commands to ``app``."""
