"""The storage protocol: where input files and artifacts live.

Keys are relative, slash-separated names made by conveyor itself (``inputs/<job id>``,
``artifacts/<job id>/<token>/<name>``), never by a client. A write goes to a temp object first
and becomes visible under its key only when committed, after its bytes are durable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")


class BadKey(ValueError):
    pass


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise BadKey(f"not a storage key: {key!r}")
    return key


def input_key(job_id: str) -> str:
    return check_key(f"inputs/{job_id}")


def artifact_key(job_id: str, token: str, name: str) -> str:
    return check_key(f"artifacts/{job_id}/{token}/{name}")


class TempObject(Protocol):
    """An object being written: bytes go in, then :meth:`commit` or :meth:`abort`."""

    size: int

    def write(self, data: bytes) -> None: ...

    def commit(self, key: str) -> None:
        """Make the bytes durable, then visible under ``key`` atomically."""
        ...

    def abort(self) -> None: ...


class Storage(Protocol):
    def temp(self) -> TempObject: ...

    def local_path(self, key: str) -> Path:
        """A filesystem path for ``key`` (workers read inputs through it)."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...

    def keys(self, prefix: str) -> Iterator[str]: ...

    def sweep_temp(self) -> int:
        """Remove temp objects left by crashed writers; return how many."""
        ...

    def ping(self) -> None: ...
