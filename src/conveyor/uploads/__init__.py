"""tus 1.0.0 resumable uploads (``/v1/uploads``), behind :mod:`conveyor.api.routes_uploads`.

- :mod:`.protocol`  pure header rules: versions, extensions, metadata, checksums, dates
- :mod:`.staging`   the bytes of unfinished uploads, in the data dir (fsync, file locks)
- :mod:`.receive`   one PATCH body: appended, hashed, checked, made durable, then counted
- :mod:`.finish`    the last byte: input into storage, job committed exactly once
- :mod:`.service`   the operations the routes call, and the maintenance sweeps
"""
