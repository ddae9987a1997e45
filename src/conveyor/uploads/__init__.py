"""tus 1.0.0 resumable uploads (``/v1/uploads``), behind :mod:`conveyor.api.routes_uploads`.

- :mod:`.protocol`  pure header rules: versions, extensions, metadata, checksums, dates
- :mod:`.staging`   the bytes of unfinished uploads, in the data dir (fsync, file locks)
- :mod:`.receive`   one PATCH body: appended, hashed, checked, made durable, then counted
- :mod:`.finish`    the last byte: input into storage, job committed exactly once
- :mod:`.service`   the operations the routes call, and the maintenance sweeps
- :mod:`.shared`    the same on object storage: each PATCH an object, any server goes on
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.settings import Settings
    from conveyor.storage import Storage
    from conveyor.store import Store
    from conveyor.uploads.service import TusUploads


def tus_uploads(settings: Settings, store: Store, storage: Storage) -> TusUploads:
    """Uploads staged on this server's disk, or, on S3, in the bucket every server shares."""
    from conveyor.storage.s3 import S3Storage

    if isinstance(storage, S3Storage):
        from conveyor.uploads.shared import SharedUploads

        return SharedUploads(settings, store, storage)
    from conveyor.uploads.service import TusUploads

    return TusUploads(settings, store, storage)
