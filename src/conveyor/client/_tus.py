"""The I/O-free half of :meth:`Client.submit_resumable`: a tus 1.0.0 upload to ``/v1/uploads``
that goes on after cut connections, server restarts and (with an :class:`UploadStore`) a restart
of the client itself.

:class:`ResumableUpload` decides each request from the answer to the one before; ``_sync.py``
and ``_async.py`` only send them, read the file's bytes and sleep the pauses it asks for.

- ``POST`` creates the upload (the job's parameters travel in ``Upload-Metadata``), ``PATCH``
  sends the bytes from the server's offset (the rest of the file, or ``chunk_size`` bytes at a
  time), the answer that brings the last byte names the job (``Conveyor-Job-Id``), and a
  ``GET`` reads the job back.
- A failure (no answer, a cut body, 5xx, 423, 429, 408, or 409 when the offsets disagree) is
  followed by a ``HEAD`` that says where the upload stands, then the bytes from there. After
  :data:`RETRY_DELAYS` failures in a row without progress the upload gives up with the last
  error; any progress starts the count again.
- With a store, the upload's URL is remembered under a fingerprint of the server, the file
  (path, size, modification time) and the job parameters, and a later call with the same
  fingerprint resumes it (a remembered upload that is gone starts afresh).
- The job's ``input.sha256`` must be the file's: a file changed while it was sent, or any
  damage on the way, raises ``file_changed`` or ``checksum_mismatch`` (the caller cancels the
  job).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conveyor.client._core import _error_from, job_fields
from conveyor.errors import ClientError

log = logging.getLogger("conveyor.client")

TUS_VERSION = "1.0.0"
#: The pause before each retry after a failure with no progress; past the last one, give up.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
#: Answers worth another try: time-outs, a lock still held by a cut request, rate limits and
#: outages (409 and 460 are handled apart: the upload is asked where it stands at once).
RETRY_STATUSES = frozenset({408, 423, 429, 500, 502, 503, 504})
#: The longest ``Retry-After`` honoured.
MAX_RETRY_AFTER_S = 60.0
#: Remembered uploads older than this are dropped from a store (the server's default expiry
#: of an idle upload is a day).
STORE_MAX_AGE_S = 30 * 86400


def default_store_path() -> Path:
    """``$XDG_CACHE_HOME/conveyor/uploads.json`` (``~/.cache`` when unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "conveyor" / "uploads.json"


class UploadStore:
    """Unfinished uploads remembered between runs: a JSON file mapping a fingerprint to the
    upload's URL. Writes are atomic (a temp file renamed into place); when two processes write
    at once the last one wins, and the worst that does is a fresh upload where one could have
    resumed."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self._warned = False

    def get(self, fingerprint: str) -> str | None:
        entry = self._read().get(fingerprint)
        return str(entry["url"]) if isinstance(entry, dict) and "url" in entry else None

    def put(self, fingerprint: str, url: str) -> None:
        entries = self._read()
        entries[fingerprint] = {"url": url, "at": time.time()}
        self._write(entries)

    def forget(self, fingerprint: str) -> None:
        entries = self._read()
        if entries.pop(fingerprint, None) is not None:
            self._write(entries)

    def _write(self, entries: dict[str, Any]) -> None:
        """Save ``entries``; a store that cannot be written (a read-only home) costs only the
        resuming of a later run, never the upload: it is logged, once per store."""
        try:
            self._replace(entries)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot remember uploads in %s (%s): an interrupted upload will "
                            "start again from the beginning", self.path, exc)

    def _read(self) -> dict[str, Any]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(entries, dict):
            return {}
        cutoff = time.time() - STORE_MAX_AGE_S
        return {key: entry for key, entry in entries.items() if isinstance(entry, dict)
                and isinstance(entry.get("at"), int | float) and entry["at"] > cutoff}

    def _replace(self, entries: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".uploads-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(entries, fh)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def encode_metadata(pairs: Mapping[str, str]) -> str:
    """``Upload-Metadata``: ``key base64(value)`` pairs, comma-separated."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}"
                    for key, value in pairs.items())


@dataclass(frozen=True, slots=True)
class TusRequest:
    """One request of a resumable upload. A ``PATCH``'s body is the file's bytes
    ``[offset, offset + length)``; ``delay`` is the pause to make before sending it."""

    method: str
    url: str
    headers: dict[str, str]
    delay: float = 0.0
    offset: int = 0
    length: int = 0


@dataclass(slots=True)
class _InOrderHash:
    """The sha256 of the file's bytes fed in position order; bytes sent again after a cut
    (the same bytes at the same positions) are not counted twice."""

    digest: Any = field(default_factory=hashlib.sha256)
    upto: int = 0

    def feed(self, position: int, data: bytes) -> None:
        if position <= self.upto < position + len(data):
            self.digest.update(data[self.upto - position:])
            self.upto = position + len(data)


class ResumableUpload:
    """The decisions of one resumable upload (see the module's docstring)."""

    def __init__(self, base_url: str, path: str | os.PathLike[str], metadata: Mapping[str, str],
                 *, chunk_size: int | None = None, store: UploadStore | None = None) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError("chunk_size must be at least 1 byte")
        self.path = Path(path)
        stat = self.path.stat()
        self.size = stat.st_size
        self._stamp = (stat.st_size, stat.st_mtime_ns)
        self.base_url = base_url
        self.collection = f"{base_url}/v1/uploads"
        self.metadata = encode_metadata(metadata)
        self.chunk_size = chunk_size
        self.store = store
        self.fingerprint = hashlib.sha256(json.dumps(
            [base_url, str(self.path.resolve()), stat.st_size, stat.st_mtime_ns,
             sorted(metadata.items())]).encode()).hexdigest()
        self.url = store.get(self.fingerprint) if store is not None else None
        #: True while the URL is one remembered from an earlier run (it may be gone).
        self.remembered = self.url is not None
        self.offset = 0
        self.job_id: str | None = None
        #: The job, read back once the upload is complete.
        self.job: dict[str, Any] | None = None
        self.hash = _InOrderHash()
        self._failures = 0

    @classmethod
    def for_job(cls, base_url: str, path: str | os.PathLike[str], *, pipeline: str,
                options: Mapping[str, Any] | None, webhook_url: str | None,
                priority: int | None, max_attempts: int | None, timeout_s: float | None,
                filename: str | None, chunk_size: int | None,
                store: UploadStore | None) -> ResumableUpload:
        """An upload whose metadata carries the job parameters of ``POST /v1/jobs``."""
        metadata = job_fields(path, pipeline=pipeline, options=options,
                              webhook_url=webhook_url, priority=priority,
                              max_attempts=max_attempts, timeout_s=timeout_s, filename=filename)
        return cls(base_url, path, metadata, chunk_size=chunk_size, store=store)

    # -- the requests ------------------------------------------------------------------------

    def first(self) -> TusRequest:
        return self._head() if self.url is not None else self._create()

    def _headers(self, **more: str) -> dict[str, str]:
        return {"Tus-Resumable": TUS_VERSION, **more}

    def _create(self, delay: float = 0.0) -> TusRequest:
        headers = self._headers(**{"Upload-Length": str(self.size)})
        if self.metadata:
            headers["Upload-Metadata"] = self.metadata
        return TusRequest("POST", self.collection, headers, delay)

    def _head(self, delay: float = 0.0) -> TusRequest:
        assert self.url is not None
        return TusRequest("HEAD", self.url, self._headers(), delay)

    def _patch(self) -> TusRequest:
        assert self.url is not None
        left = self.size - self.offset
        length = left if self.chunk_size is None else min(self.chunk_size, left)
        headers = self._headers(**{"Content-Type": "application/offset+octet-stream",
                                   "Upload-Offset": str(self.offset),
                                   "Content-Length": str(length)})
        return TusRequest("PATCH", self.url, headers, offset=self.offset, length=length)

    # -- the answers -------------------------------------------------------------------------

    def answer(self, request: TusRequest, response: httpx.Response) -> TusRequest | None:
        """The next request after ``response``; None once the job was read back
        (:attr:`job`). Raises ClientError for an answer that no retry can change."""
        status = response.status_code
        job_id = response.headers.get("conveyor-job-id")
        if request.method == "GET" and status == 200:
            self.job = response.json()
            return None
        if request.method == "POST" and status == 201:
            location = response.headers.get("location")
            if not location:
                raise ClientError(status, "bad_response", "the upload was created without a "
                                  "Location")
            self.url = str(response.url.join(location))
            self.remembered = False
            self._failures = 0
            if self.store is not None:
                self.store.put(self.fingerprint, self.url)
            return self._done(job_id) if job_id else self._patch()
        if request.method == "HEAD" and status == 200:
            if response.headers.get("upload-length") != str(self.size):
                if self.remembered:  # a remembered upload of another version of the file
                    return self._start_again()
                raise ClientError(status, "bad_response", "the upload's length is not the "
                                  "file's")
            offset = _offset(response)
            if offset > self.offset:  # a cut body whose first bytes were kept
                self._failures = 0
            self.offset, self.remembered = offset, False
            return self._done(job_id) if job_id else self._patch()
        if request.method == "HEAD" and status in (404, 410) and self.remembered:
            return self._start_again()  # the remembered upload expired or was terminated
        if request.method == "PATCH" and status == 204:
            offset = _offset(response)
            if offset > self.offset:
                self._failures = 0
            self.offset = offset
            if job_id:
                return self._done(job_id)
            return self._patch() if offset < self.size else self._head()
        if request.method == "PATCH" and status in (409, 460):
            # The offsets disagree (another request moved it) or the body was damaged on the
            # way: ask where the upload stands, at once.
            return self._again(response, delay=0.0)
        if status in RETRY_STATUSES:
            return self._again(response)
        raise _error_from(response)

    def failed(self, request: TusRequest, exc: Exception) -> TusRequest:
        """The next request after ``request`` got no answer (refused, cut, timed out); raises
        ``exc`` once the retries are spent."""
        if self._failures >= len(RETRY_DELAYS):
            raise exc
        return self._retry(RETRY_DELAYS[self._spend()])

    def _again(self, response: httpx.Response, delay: float | None = None) -> TusRequest:
        if self._failures >= len(RETRY_DELAYS):
            raise _error_from(response)
        index = self._spend()  # an immediate retry counts too: no endless 409 loop
        pause = RETRY_DELAYS[index] if delay is None else delay
        return self._retry(max(pause, _retry_after(response)))

    def _spend(self) -> int:
        self._failures += 1
        return self._failures - 1

    def _retry(self, delay: float) -> TusRequest:
        if self.job_id is not None:
            return self._read_job(delay)
        return self._create(delay) if self.url is None else self._head(delay)

    def _read_job(self, delay: float = 0.0) -> TusRequest:
        assert self.job_id is not None
        quoted = urllib.parse.quote(self.job_id, safe="")
        return TusRequest("GET", f"{self.base_url}/v1/jobs/{quoted}", {}, delay)

    def _start_again(self) -> TusRequest:
        if self.store is not None:
            self.store.forget(self.fingerprint)
        self.url, self.remembered, self.offset = None, False, 0
        return self._create()

    def _done(self, job_id: str) -> TusRequest:
        """The job exists: nothing more to send, and the job to read back."""
        self.job_id = job_id
        self._failures = 0
        if self.store is not None:
            self.store.forget(self.fingerprint)
        return self._read_job()

    def shrunk(self) -> ClientError:
        """What to raise when the file ends before the bytes a request announced."""
        return ClientError(0, "file_changed", f"{self.path.name} shrank while it was uploaded")

    # -- the end -----------------------------------------------------------------------------

    def check(self, job: Mapping[str, Any]) -> None:
        """Raise unless the job's input is this file, byte for byte: unchanged since the upload
        began (size and modification time) and of the same sha256 (called with :attr:`job`)."""
        stat = self.path.stat()
        if (stat.st_size, stat.st_mtime_ns) != self._stamp:
            raise ClientError(0, "file_changed",
                              f"{self.path.name} changed while it was uploaded")
        if self.hash.upto != self.size:  # resumed: the bytes before the resume were not read
            with self.path.open("rb") as fh:
                local = hashlib.file_digest(fh, "sha256").hexdigest()
        else:
            local = self.hash.digest.hexdigest()
        remote = (job.get("input") or {}).get("sha256")
        if remote != local:
            raise ClientError(0, "checksum_mismatch",
                              f"the server's copy of {self.path.name} has sha256 {remote}, "
                              f"the file {local}")


def _offset(response: httpx.Response) -> int:
    value = response.headers.get("upload-offset", "")
    if not value.isdigit():
        raise ClientError(response.status_code, "bad_response",
                          f"Upload-Offset {value!r} is not a byte count")
    return int(value)


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0
