"""The I/O-free core of the Python client: request building, responses, SSE, wait policy.

Shaped like httpx: :class:`BaseClient` holds everything that does no I/O (request building,
response and error handling, the SSE parser, the ``wait()`` policy); :class:`Client` and
:class:`AsyncClient` add only the I/O, over ``httpx.Client`` and ``httpx.AsyncClient``::

    with Client("http://127.0.0.1:8000") as conveyor:
        job = conveyor.submit("cat.jpg", pipeline="image", options={"sizes": [256]})
        job = conveyor.wait(job["id"], timeout=60)
        conveyor.download(job["id"], "w256.webp", "out/")

See :mod:`conveyor.client` for the public face.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.parse
from collections.abc import (
    Callable,
    Mapping,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from conveyor.errors import ClientError

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK_SIZE = 64 * 1024
#: Longer than the server's 15 s keep-alive, so a silent stream means a dead connection.
SSE_READ_TIMEOUT = 45.0
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_EVENTS = frozenset({"job.succeeded", "job.failed", "job.cancelled"})

#: Called with (bytes sent so far, total bytes) while an upload goes out.
ProgressCallback = Callable[[int, int], None]
#: Called with each parsed SSE event while :meth:`Client.wait` follows a job.
EventCallback = Callable[[dict[str, Any]], None]
PathLike = str | os.PathLike[str]


def default_base_url() -> str:
    """``$CONVEYOR_URL``, or ``http://127.0.0.1:8000``."""
    return os.environ.get("CONVEYOR_URL") or DEFAULT_URL


def default_api_key() -> str | None:
    """``$CONVEYOR_API_KEY``, or None (a server on loopback with no key runs open)."""
    return os.environ.get("CONVEYOR_API_KEY") or None


def is_terminal_job(job: Mapping[str, Any]) -> bool:
    """Whether a job dict is in a final state (succeeded, failed or cancelled)."""
    return job.get("state") in TERMINAL_STATES


def is_terminal_event(event: Mapping[str, Any]) -> bool:
    """Whether a parsed SSE event ends its job (``job.succeeded/failed/cancelled``)."""
    return event.get("event") in TERMINAL_EVENTS


class SSEParser:
    """A sans-I/O Server-Sent Events parser: feed it lines, get events back.

    An event is ``{"id": str | None, "event": str, "data": Any}``; ``data`` is decoded JSON when
    it parses, else the raw text. ``:`` comments and ``retry:`` fields are ignored.
    """

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        """Take one line (without its line ending); return an event when a blank line ends one."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self.last_event_id = value
        return None

    def _dispatch(self) -> dict[str, Any] | None:
        if not self._data:
            self._event = ""
            return None
        text = "\n".join(self._data)
        data: Any
        try:
            data = json.loads(text)
        except ValueError:
            data = text
        event = {"id": self.last_event_id, "event": self._event or "message", "data": data}
        self._event, self._data = "", []
        return event


class WaitPlan:
    """What ``wait()`` does next, decided without I/O.

    Follow SSE; when a stream that delivered events breaks, reconnect with ``Last-Event-ID``;
    when the stream cannot be had at all (an error before any event, or three empty streams in a
    row), poll ``GET /v1/jobs/{id}`` with a backoff from 0.2 s to 2 s.
    """

    MAX_EMPTY_STREAMS = 3

    def __init__(self, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.deadline = None if timeout is None else clock() + timeout
        self.last_event_id: str | None = None
        #: True while wait() should follow SSE; false once the job ended or SSE is given up.
        self.follow = True
        self.fell_back = False
        self._seen_in_stream = 0
        self._empty_streams = 0
        self._delay = 0.2

    def remaining(self) -> float | None:
        """Seconds left (``None``: no deadline); raises ``TimeoutError`` once it has passed."""
        if self.deadline is None:
            return None
        left = self.deadline - self.clock()
        if left <= 0:
            raise TimeoutError("timed out waiting for the job to finish")
        return left

    def read_timeout(self) -> float:
        left = self.remaining()
        return SSE_READ_TIMEOUT if left is None else min(left, SSE_READ_TIMEOUT)

    def stream_started(self) -> None:
        self._seen_in_stream = 0

    def saw(self, event: Mapping[str, Any]) -> bool:
        """Record an event; true when it is the terminal one."""
        self._seen_in_stream += 1
        self._empty_streams = 0
        if event.get("id") is not None:
            self.last_event_id = str(event["id"])
        if is_terminal_event(event):
            self.follow = False
            return True
        return False

    def stream_ended(self, *, failed: bool) -> None:
        """The stream ended (cleanly or not) before the terminal event."""
        if self._seen_in_stream == 0:
            self._empty_streams += 1
            if failed or self._empty_streams >= self.MAX_EMPTY_STREAMS:
                self.follow = False
                self.fell_back = True

    def next_delay(self) -> float:
        """The next polling pause: 0.2 s, half again each time, at most 2 s (or the deadline)."""
        delay, self._delay = self._delay, min(self._delay * 1.5, 2.0)
        left = self.remaining()
        return delay if left is None else min(delay, left)


def job_fields(path: PathLike, *, pipeline: str, options: Mapping[str, Any] | None,
               webhook_url: str | None, priority: int | None, max_attempts: int | None,
               timeout_s: float | None, filename: str | None) -> dict[str, str]:
    """An upload's job parameters as text, as the query of ``POST /v1/jobs`` and the tus
    ``Upload-Metadata`` both carry them (``options`` as JSON; unset ones left out)."""
    fields = {"pipeline": pipeline, "filename": filename or Path(path).name}
    if options is not None:
        fields["options"] = json.dumps(options, separators=(",", ":"))
    optional = {"webhook_url": webhook_url, "priority": priority,
                "max_attempts": max_attempts, "timeout_s": timeout_s}
    fields.update({k: str(v) for k, v in optional.items() if v is not None})
    return fields


@dataclass(frozen=True, slots=True)
class UploadPlan:
    """The I/O-free half of an upload: where to send what, and how many bytes."""

    path: Path
    size: int
    url: str
    params: dict[str, str]
    headers: dict[str, str]


def _error_from(response: httpx.Response) -> ClientError:
    """The ClientError for a 4xx/5xx response whose body has been read."""
    code, detail = f"http_{response.status_code}", response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            detail = text[:300]
    else:
        if isinstance(body, dict):
            code = str(body.get("code") or code)
            detail = str(body.get("detail") or body.get("title") or detail)
    return ClientError(response.status_code, code, detail)


def _check_event_stream(response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        raise ClientError(response.status_code, "bad_response",
                          f"expected text/event-stream, got {content_type or 'no content type'}")


def _filename_from_disposition(value: str | None) -> str | None:
    if not value:
        return None
    match = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", value, re.I)
    if match:
        return urllib.parse.unquote(match.group(1).strip())
    match = re.search(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"|filename\s*=\s*([^;]+)', value, re.I)
    if match:
        return (match.group(1) or match.group(2) or "").strip() or None
    return None


def _safe_name(name: str | None, fallback: str) -> str:
    """A file name that stays inside the destination directory."""
    name = (name or "").replace("\\", "/").split("/")[-1].strip()
    return name if name not in ("", ".", "..") else fallback


def _target(dest: PathLike, name: str) -> Path:
    """``dest`` itself, or ``dest/name`` when it is a directory (or a string ending in ``/``)."""
    path = Path(dest)
    if path.is_dir() or str(dest).endswith(("/", os.sep)):
        return path / name
    return path


class _Download:
    """Writes a download to ``<target>.part``, checks the ETag sha256, then renames into place."""

    def __init__(self, response: httpx.Response, dest: PathLike, fallback: str) -> None:
        name = _safe_name(
            _filename_from_disposition(response.headers.get("content-disposition")), fallback
        )
        self.target = _target(dest, name)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.part = self.target.with_name(self.target.name + ".part")
        self.expected = response.headers.get("etag", "").removeprefix("W/").strip('"').lower()
        self.digest = hashlib.sha256()
        self.file = open(self.part, "wb")  # closed in finish() or abort()

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.file.write(chunk)

    def finish(self) -> Path:
        self.file.close()
        if len(self.expected) == 64 and self.digest.hexdigest() != self.expected:
            self.part.unlink(missing_ok=True)
            raise ClientError(200, "checksum_mismatch",
                              f"{self.target.name}: sha256 differs from the server's ETag")
        self.part.replace(self.target)
        return self.target

    def abort(self) -> None:
        self.file.close()
        self.part.unlink(missing_ok=True)


class BaseClient:
    """The I/O-free core shared by :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        api_key: str | None = None,
    ) -> None:
        self.base_url = (base_url or default_base_url()).rstrip("/")
        self.headers = dict(headers or {})
        key = api_key or default_api_key()
        if key and not any(k.lower() == "authorization" for k in self.headers):
            self.headers["Authorization"] = f"Bearer {key}"
        self.timeout = timeout

    # -- request building -------------------------------------------------------------------

    @staticmethod
    def job_url(job_id: str, *parts: str) -> str:
        """The path of a job (or of one of its sub-resources), with each part quoted."""
        quoted = [urllib.parse.quote(p, safe="") for p in (job_id, *parts)]
        return "/v1/jobs/" + "/".join(quoted)

    @staticmethod
    def list_params(
        state: str | None, pipeline: str | None, limit: int, cursor: str | None
    ) -> dict[str, str]:
        params = {"limit": str(limit)}
        for key, value in (("state", state), ("pipeline", pipeline), ("cursor", cursor)):
            if value is not None:
                params[key] = value
        return params

    @staticmethod
    def events_headers(last_event_id: str | None) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        return headers

    def plan_upload(
        self,
        path: PathLike,
        *,
        pipeline: str = "auto",
        options: Mapping[str, Any] | None = None,
        webhook_url: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        filename: str | None = None,
        reuse: bool = False,
    ) -> UploadPlan:
        """Everything :meth:`Client.submit` sends, except the bytes themselves."""
        file = Path(path)
        size = file.stat().st_size
        params = job_fields(file, pipeline=pipeline, options=options, webhook_url=webhook_url,
                            priority=priority, max_attempts=max_attempts, timeout_s=timeout_s,
                            filename=filename)
        if reuse:
            params["reuse"] = "true"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return UploadPlan(file, size, "/v1/jobs", params, headers)

    @staticmethod
    def plan_url_import(
        url: str,
        *,
        pipeline: str = "auto",
        options: Mapping[str, Any] | None = None,
        webhook_url: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        filename: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The JSON body and headers of :meth:`Client.submit_url` (no query string: a JSON
        body with one is a raw upload of a JSON file)."""
        body: dict[str, Any] = {"url": url, "pipeline": pipeline}
        optional = {"options": dict(options) if options is not None else None,
                    "webhook_url": webhook_url, "priority": priority,
                    "max_attempts": max_attempts, "timeout_s": timeout_s, "filename": filename}
        body.update({k: v for k, v in optional.items() if v is not None})
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return body, headers

    # -- response handling ------------------------------------------------------------------

    @staticmethod
    def result(response: httpx.Response) -> Any:
        """The decoded body of a read response; raises ClientError for a 4xx/5xx."""
        if response.is_error:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()
