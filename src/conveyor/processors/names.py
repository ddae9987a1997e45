"""The one rule for artifact names, shared by the worker's context and ``conveyor.testing``.

An artifact name becomes the last part of a storage key and of a download URL, and a
``Content-Disposition`` filename: letters, digits, ``_``, ``.`` and ``-``, not starting with a
dot or a dash, at most 200 characters. Anything else ("my file.txt", "../x", "a/b") is a bug in
the processor, so it fails the job at once (:class:`BadArtifactName`, not retryable) instead of
being retried ``max_attempts`` times.
"""

from __future__ import annotations

import re

from conveyor.errors import ProcessorError
from conveyor.models import ErrorCode

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


class BadArtifactName(ProcessorError, ValueError):
    """A processor asked for an artifact name the rule refuses (also a ``ValueError``)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            ErrorCode.BAD_ARTIFACT_NAME,
            f"bad artifact name {name[:80]!r}: use letters, digits, '_', '.' and '-' "
            "(not first), at most 200 characters",
        )
        self.name = name


def is_artifact_name(name: str) -> bool:
    """True if ``name`` is a valid artifact name (pure)."""
    return _NAME.fullmatch(name) is not None


def check_artifact_name(name: str) -> str:
    """Return ``name`` if valid, else raise :class:`BadArtifactName`."""
    if not is_artifact_name(name):
        raise BadArtifactName(name)
    return name
