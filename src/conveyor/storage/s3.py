"""S3-compatible object storage (AWS S3, MinIO, R2, Ceph) through obstore.

``CONVEYOR_STORAGE_URL=s3://bucket/prefix`` with the standard ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``.

- **Clients are made lazily, per process**: obstore is not fork-safe (obstore#441), so nothing
  is created at import or in ``__init__``; a process that finds a client made by another pid
  makes its own.
- **Uploads**: :mod:`.s3_upload` (streamed multipart uploads, back-pressure, the budget).
- **boto3** does what obstore cannot: list and abort multipart uploads (``abort()`` after a
  cancelled upload, :meth:`S3Storage.sweep`).
- Every failure becomes :class:`~conveyor.storage.base.StorageUnavailable` (503 at the API,
  a retryable ``storage_error`` in a worker) or :class:`NotFound`; the detail a client sees
  names no endpoint, the log has the full error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from conveyor.errors import short_message
from conveyor.storage.base import NotFound, ObjectInfo, StorageError, StorageUnavailable
from conveyor.storage.keys import check_key, check_prefix
from conveyor.storage.s3_upload import (
    MAX_PARTS,
    MIN_PART,
    PART_CONCURRENCY,
    Budget,
    S3Writer,
    part_size,
    unavailable,
)

log = logging.getLogger("conveyor.storage.s3")

READ_CHUNK = 256 * 1024
#: S3 takes 1,000 keys per DeleteObjects.
DELETE_BATCH = 1000
PING_PREFIX = ".conveyor-ping/"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    endpoint: str | None
    region: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"CONVEYOR_STORAGE_URL needs a bucket (s3://bucket/prefix): {url!r}")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(bucket, prefix.strip("/"), os.environ.get("AWS_ENDPOINT_URL") or None,
                   region or "us-east-1")

    def full(self, key: str) -> str:
        """The bucket key of a storage key (boto3 sees the prefix; obstore adds it itself)."""
        return f"{self.prefix}/{key}" if self.prefix else key


def _why(exc: Exception) -> str:
    """Why a request failed, in words an operator can act on (no endpoint, no signature)."""
    text = str(exc)
    if "403" in text or "401" in text or type(exc).__name__ in (
            "PermissionDeniedError", "UnauthenticatedError"):
        return "access denied (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the policy)"
    if "error sending request" in text or "connect" in text.lower():
        return "the endpoint is unreachable (check AWS_ENDPOINT_URL and the network)"
    return f"{type(exc).__name__} (see the log)"


#: Part copies of one compose in flight at once (each is S3's work, not this process's).
COPY_CONCURRENCY = 4
#: The most one part copy takes of its source (S3 copies at most 5 GiB per request): a larger
#: object is copied as several parts of equal size.
COPY_RANGE = 1024**3


def _ranges(size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of at most :data:`COPY_RANGE` bytes covering ``size`` bytes, all of
    one size but the last (each but the last is over half a range long); none for an empty
    object (it adds nothing)."""
    if size <= 0:
        return []
    n = -(-size // COPY_RANGE)
    step = -(-size // n)
    return [(lo, min(lo + step, size)) for lo in range(0, size, step)]


def _copy_error(exc: Exception, key: str) -> StorageError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    if code in ("NoSuchKey", "404", "NoSuchUpload"):
        return NotFound(f"a source of {key}")
    return unavailable(exc, f"copy to {key}", missing=False)


class S3Reader:
    def __init__(self, chunks: AsyncIterator[Any] | None, key: str) -> None:
        self._chunks, self._key = chunks, key

    def __aiter__(self) -> S3Reader:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks is None:
            raise StopAsyncIteration
        try:
            return bytes(await self._chunks.__anext__())
        except StopAsyncIteration:
            self._chunks = None
            raise
        except Exception as exc:
            self._chunks = None
            raise unavailable(exc, f"read {self._key}") from None

    async def aclose(self) -> None:
        self._chunks = None  # dropping the stream drops the HTTP response


class S3Storage:
    """Objects in one bucket under one prefix. See the module docstring."""

    shared: ClassVar[bool] = True

    def __init__(self, url: str, *, max_upload_bytes: int = 10 * 1024**3,
                 buffer_bytes: int = 256 * 1024**2, part_bytes: int = MIN_PART) -> None:
        self.loc = S3Location.parse(url)
        self.part_size = part_size(max_upload_bytes, part_bytes)
        self._buffer_bytes = max(buffer_bytes, self.part_size)
        self._budget: Budget | None = None
        self._clients: dict[str, tuple[int, Any]] = {}

    @property
    def budget(self) -> Budget:
        if self._budget is None:
            self._budget = Budget(self._buffer_bytes)
        return self._budget

    def _client(self, name: str, make: Any) -> Any:
        pid = os.getpid()
        made = self._clients.get(name)
        if made is None or made[0] != pid:  # never use a client made before a fork
            made = (pid, make())
            self._clients[name] = made
        return made[1]

    def store(self) -> Any:
        """The obstore ``S3Store`` of this process."""
        def make() -> Any:
            from obstore.store import S3Store

            loc = self.loc
            options: Any = {"connect_timeout": timedelta(seconds=5),
                                       "timeout": timedelta(seconds=120)}
            extra: dict[str, Any] = {"region": loc.region}
            if loc.endpoint:
                extra["endpoint"] = loc.endpoint
                options["allow_http"] = loc.endpoint.startswith("http://")
            # Few quick retries: an outage answers 503 within seconds, not minutes.
            retry: Any = {"max_retries": 3, "retry_timeout": timedelta(seconds=10)}
            return S3Store(loc.bucket, prefix=loc.prefix or None, client_options=options,
                           retry_config=retry, **extra)

        return self._client("obstore", make)

    def boto(self) -> Any:
        """The boto3 client of this process (multipart listing and abort only)."""
        def make() -> Any:
            import boto3
            from botocore.config import Config

            return boto3.client(
                "s3", endpoint_url=self.loc.endpoint, region_name=self.loc.region,
                config=Config(connect_timeout=5, read_timeout=30,
                              retries={"max_attempts": 2, "mode": "standard"}))

        return self._client("boto3", make)

    async def open_writer(self, key: str) -> S3Writer:
        return S3Writer(self, check_key(key))

    async def put_bytes(self, key: str, data: bytes) -> None:
        import obstore

        try:
            await obstore.put_async(self.store(), key, data, use_multipart=False)
        except Exception as exc:
            raise unavailable(exc, f"put {key}", missing=False) from None

    async def read(self, key: str, start: int = 0, end: int | None = None) -> S3Reader:
        import obstore

        check_key(key)
        if end is not None and end <= start:
            if await self.stat(key) is None:
                raise NotFound(key)
            return S3Reader(None, key)
        options: dict[str, Any] = {}
        if end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            result = await obstore.get_async(self.store(), key, options=options)  # type: ignore[arg-type]
        except Exception as exc:
            # S3 answers 416 to a range starting at or past the end: that is no bytes.
            if start and "416" in str(exc) and (info := await self.stat(key)) is not None \
                    and start >= info.size:
                return S3Reader(None, key)
            raise unavailable(exc, f"read {key}") from None
        # Small chunks: a download holds one of them, never the object.
        return S3Reader(aiter(result.stream(min_chunk_size=READ_CHUNK)), key)

    async def stat(self, key: str) -> ObjectInfo | None:
        import obstore

        check_key(key)
        try:
            meta = await obstore.head_async(self.store(), key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise unavailable(exc, f"stat {key}") from None
        return ObjectInfo(key, meta["size"], meta["last_modified"].timestamp())

    async def delete(self, key: str) -> None:
        await self._delete([check_key(key)])

    async def _delete(self, keys: list[str]) -> None:
        import obstore

        for i in range(0, len(keys), DELETE_BATCH):
            try:
                await obstore.delete_async(self.store(), keys[i : i + DELETE_BATCH])
            except FileNotFoundError:
                pass
            except Exception as exc:
                raise unavailable(exc, "delete") from None

    async def delete_prefix(self, prefix: str) -> None:
        await self._delete(await self.keys(prefix))

    async def keys(self, prefix: str) -> list[str]:
        return [meta["path"] for meta in await self._list(prefix)]

    async def _list(self, prefix: str) -> list[Any]:
        import obstore

        check_prefix(prefix)
        # obstore lists whole path segments: list the folder, then match the name's start.
        folder = prefix.rpartition("/")[0]
        try:
            found = await obstore.list(self.store(), folder or None).collect_async()
        except Exception as exc:
            raise unavailable(exc, f"list {prefix}") from None
        return sorted((m for m in found if m["path"].startswith(prefix)
                       and not m["path"].startswith(PING_PREFIX)), key=lambda m: m["path"])

    async def presign(self, key: str, expires_s: float) -> str:
        import obstore

        try:
            return await obstore.sign_async(self.store(), "GET", check_key(key),
                                             timedelta(seconds=expires_s))
        except Exception as exc:
            raise unavailable(exc, f"presign {key}") from None

    async def get_to_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        stream = await self.read(key)
        digest = hashlib.sha256()
        try:
            with open(path, "xb") as fh:
                async for chunk in stream:
                    digest.update(chunk)
                    await asyncio.to_thread(fh.write, chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if sha256 is not None and digest.hexdigest() != sha256:
            path.unlink(missing_ok=True)
            raise StorageError(f"the downloaded input does not match its sha256 ({key})")

    async def put_from_file(self, path: Path, key: str) -> None:
        import obstore

        try:
            await obstore.put_async(self.store(), check_key(key), path,
                                    chunk_size=self.part_size, max_concurrency=PART_CONCURRENCY)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self.abort_uploads(key)
            if isinstance(exc, Exception):
                raise unavailable(exc, f"put {key}", missing=False) from None
            raise

    async def compose(self, sources: list[tuple[str, int]], key: str) -> None:
        """Write ``key`` as the objects ``sources`` one after another: of each (key, size),
        its first ``size`` bytes.

        Inside S3 (a copy, or a multipart upload of part copies: no byte passes through this
        process) when every source but the last is at least one part long; otherwise the
        bytes stream through a writer."""
        check_key(key)
        pieces = [(src, lo, hi) for src, size in sources for lo, hi in _ranges(size)]
        if not pieces:
            await self.put_bytes(key, b"")
            return
        if all(n >= self.part_size for _, n in sources[:-1]) and len(pieces) <= MAX_PARTS:
            try:
                await asyncio.to_thread(self._copy, pieces, key)
            except Exception as exc:
                raise _copy_error(exc, key) from None
            return
        writer = await self.open_writer(key)
        try:
            for src, size in sources:
                stream = await self.read(src, 0, size)
                try:
                    async for chunk in stream:
                        await writer.write(chunk)
                finally:
                    await stream.aclose()
            await writer.complete()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(writer.abort())
            raise

    def _copy(self, pieces: list[tuple[str, int, int]], key: str) -> None:
        client, bucket, full = self.boto(), self.loc.bucket, self.loc.full(key)
        if len(pieces) == 1:  # one whole object of at most COPY_RANGE bytes
            client.copy_object(Bucket=bucket, Key=full,
                               CopySource={"Bucket": bucket, "Key": self.loc.full(pieces[0][0])})
            return
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=full)["UploadId"]

        def copy_part(number: int) -> dict[str, Any]:
            src, lo, hi = pieces[number - 1]
            done = client.upload_part_copy(
                Bucket=bucket, Key=full, UploadId=upload_id, PartNumber=number,
                CopySource={"Bucket": bucket, "Key": self.loc.full(src)},
                CopySourceRange=f"bytes={lo}-{hi - 1}")
            return {"PartNumber": number, "ETag": done["CopyPartResult"]["ETag"]}

        try:
            with ThreadPoolExecutor(COPY_CONCURRENCY, "conveyor-s3-copy") as pool:
                parts = list(pool.map(copy_part, range(1, len(pieces) + 1)))
            client.complete_multipart_upload(Bucket=bucket, Key=full, UploadId=upload_id,
                                             MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=bucket, Key=full, UploadId=upload_id)
            raise

    async def _uploads(self, key_prefix: str) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            pages = self.boto().get_paginator("list_multipart_uploads").paginate(
                Bucket=self.loc.bucket, Prefix=self.loc.full(key_prefix))
            return [u for page in pages for u in page.get("Uploads", [])]

        try:
            return await asyncio.to_thread(run)
        except Exception as exc:
            raise unavailable(exc, "list multipart uploads") from None

    async def _abort(self, uploads: list[dict[str, Any]]) -> int:
        def run() -> int:
            client = self.boto()
            for upload in uploads:
                with contextlib.suppress(client.exceptions.NoSuchUpload):
                    client.abort_multipart_upload(Bucket=self.loc.bucket, Key=upload["Key"],
                                                  UploadId=upload["UploadId"])
            return len(uploads)

        try:
            return await asyncio.to_thread(run)
        except Exception as exc:
            raise unavailable(exc, "abort multipart uploads") from None

    async def abort_uploads(self, key: str) -> int:
        """Abort every multipart upload of exactly ``key`` (keys are unique per job)."""
        full = self.loc.full(key)
        return await self._abort([u for u in await self._uploads(key) if u["Key"] == full])

    async def sweep(self, older_than_s: float = 0.0) -> int:
        """Abort multipart uploads started more than ``older_than_s`` ago."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        stale = [u for u in await self._uploads("") if u["Initiated"] <= cutoff]
        return await self._abort(stale)

    async def free_bytes(self) -> int | None:
        return None  # an object store has no free-space floor to keep

    async def ping(self) -> None:
        """Write and remove a probe object: the bucket exists and the credentials may write."""
        import obstore

        key = f"{PING_PREFIX}{uuid.uuid4().hex}"
        try:
            await obstore.put_async(self.store(), key, b"", use_multipart=False)
            await obstore.delete_async(self.store(), key)
        except FileNotFoundError:
            raise StorageUnavailable(f"S3 bucket {self.loc.bucket!r} does not exist") from None
        except Exception as exc:
            log.debug("S3 ping failed: %s", short_message(str(exc), 500))
            raise StorageUnavailable(
                f"S3 bucket {self.loc.bucket!r} is not writable: {_why(exc)}") from None

