"""Byte storage behind one async protocol (:mod:`.base`); ``file://`` is the embedded default.

- :func:`from_url` builds the storage named by ``CONVEYOR_STORAGE_URL``: ``file://`` (local.py)
  or ``s3://`` (s3.py, the optional ``s3`` extra; imported only when used).
- :mod:`.keys` is the key layout; :mod:`.blocking` is the worker's synchronous bridge.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.settings import Settings
from conveyor.storage.base import (
    ByteStream,
    NotFound,
    ObjectInfo,
    PresignUnsupported,
    Storage,
    StorageError,
    StorageUnavailable,
    Writer,
)
from conveyor.storage.blocking import BlockingStorage
from conveyor.storage.keys import (
    BadKey,
    artifact_key,
    artifacts_prefix,
    attempt_prefix,
    check_key,
    check_prefix,
    input_job_id,
    input_key,
)
from conveyor.storage.local import LocalStorage


def default_url(settings: Settings) -> str:
    return settings.storage_url or f"file://{settings.data_dir / 'files'}"


def from_url(source: str | Settings) -> Storage:
    """The storage for a URL (``file:///srv/files``) or for the settings' ``storage_url``."""
    settings = source if isinstance(source, Settings) else Settings()
    url = default_url(source) if isinstance(source, Settings) else source
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"CONVEYOR_STORAGE_URL needs a scheme (file://...): {url!r}")
    if scheme == "file":
        return LocalStorage(Path(rest).expanduser())
    if scheme == "s3":
        from conveyor.storage.s3 import S3Storage

        return S3Storage(url, max_upload_bytes=settings.max_upload_bytes,
                         buffer_bytes=settings.s3_buffer_bytes,
                         part_bytes=settings.s3_part_bytes)
    raise ValueError(f"unknown storage scheme {scheme!r} in CONVEYOR_STORAGE_URL")


__all__ = [
    "BadKey",
    "BlockingStorage",
    "ByteStream",
    "LocalStorage",
    "NotFound",
    "ObjectInfo",
    "PresignUnsupported",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "Writer",
    "artifact_key",
    "artifacts_prefix",
    "attempt_prefix",
    "check_key",
    "check_prefix",
    "default_url",
    "from_url",
    "input_job_id",
    "input_key",
]
