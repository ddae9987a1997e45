"""Hashing a file on disk: one loop, used by the worker, the ``probe`` processor and tests."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """``(size in bytes, sha256 hex digest)`` of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
