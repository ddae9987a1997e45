"""The Python client of the conveyor HTTP API (``/v1``).

Shaped like httpx: :class:`BaseClient` holds everything that does no I/O (request building,
response and error handling, the SSE parser, the ``wait()`` policy); :class:`Client` and
:class:`AsyncClient` add only the I/O, over ``httpx.Client`` and ``httpx.AsyncClient``::

    with Client("http://127.0.0.1:8000") as conveyor:
        job = conveyor.submit("cat.jpg", pipeline="image", options={"sizes": [256]})
        job = conveyor.wait(job["id"], timeout=60)
        conveyor.download(job["id"], "w256.webp", "out/")

Every 4xx/5xx answer raises :class:`conveyor.errors.ClientError` carrying the problem's ``code``.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import re
import time
import urllib.parse
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
import httpx

from conveyor.errors import ClientError

__all__ = [
    "TERMINAL_EVENTS",
    "TERMINAL_STATES",
    "AsyncClient",
    "BaseClient",
    "Client",
    "SSEParser",
    "UploadPlan",
    "WaitPlan",
    "default_base_url",
    "is_terminal_event",
    "is_terminal_job",
]

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
    ) -> None:
        self.base_url = (base_url or default_base_url()).rstrip("/")
        self.headers = dict(headers or {})
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
    ) -> UploadPlan:
        """Everything :meth:`Client.submit` sends, except the bytes themselves."""
        file = Path(path)
        size = file.stat().st_size
        params = {"pipeline": pipeline, "filename": filename or file.name}
        if options is not None:
            params["options"] = json.dumps(options, separators=(",", ":"))
        optional = {"webhook_url": webhook_url, "priority": priority,
                    "max_attempts": max_attempts, "timeout_s": timeout_s}
        params.update({k: str(v) for k, v in optional.items() if v is not None})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return UploadPlan(file, size, "/v1/jobs", params, headers)

    # -- response handling ------------------------------------------------------------------

    @staticmethod
    def result(response: httpx.Response) -> Any:
        """The decoded body of a read response; raises ClientError for a 4xx/5xx."""
        if response.is_error:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


class Client(BaseClient):
    """A synchronous conveyor client (a context manager over ``httpx.Client``)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, headers=headers, timeout=timeout)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.result(self._http.request(method, url, **kwargs))

    def submit(
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
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Upload the file at ``path`` (streamed from disk) and return the new job.

        ``on_progress(bytes_sent, total)`` is called as chunks go out. With an
        ``idempotency_key`` seen before, the server returns the first job instead.
        """
        plan = self.plan_upload(
            path, pipeline=pipeline, options=options, webhook_url=webhook_url,
            priority=priority, max_attempts=max_attempts, timeout_s=timeout_s,
            idempotency_key=idempotency_key, filename=filename,
        )

        def body() -> Iterator[bytes]:
            sent = 0
            if on_progress:
                on_progress(0, plan.size)
            with plan.path.open("rb") as src:
                while chunk := src.read(CHUNK_SIZE):
                    yield chunk
                    sent += len(chunk)
                    if on_progress:
                        on_progress(sent, plan.size)

        job: dict[str, Any] = self._call(
            "POST", plan.url, params=plan.params, headers=plan.headers, content=body()
        )
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        """The job ``job_id`` (ClientError ``not_found`` / ``gone`` otherwise)."""
        job: dict[str, Any] = self._call("GET", self.job_url(job_id))
        return job

    def list(
        self,
        state: str | None = None,
        pipeline: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of jobs, newest first: ``{"items": [...], "next_cursor": str | None}``."""
        page: dict[str, Any] = self._call(
            "GET", "/v1/jobs", params=self.list_params(state, pipeline, limit, cursor)
        )
        return page

    def iter_jobs(
        self, state: str | None = None, pipeline: str | None = None, limit: int = 50
    ) -> Iterator[dict[str, Any]]:
        """Every matching job, newest first, fetching ``limit`` per page and following cursors."""
        cursor: str | None = None
        while True:
            page = self.list(state=state, pipeline=pipeline, limit=limit, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; returns it (``cancelled``, or still ``running`` while it stops)."""
        job: dict[str, Any] = self._call("POST", self.job_url(job_id, "cancel"))
        return job

    def retry(self, job_id: str) -> dict[str, Any]:
        """Queue a failed or cancelled job again; returns it."""
        job: dict[str, Any] = self._call("POST", self.job_url(job_id, "retry"))
        return job

    def delete(self, job_id: str) -> None:
        """Delete a job, its input and its artifacts."""
        self._call("DELETE", self.job_url(job_id))

    def pipelines(self) -> builtins.list[dict[str, Any]]:
        """The pipelines the server offers, with their options schemas."""
        found: builtins.list[dict[str, Any]] = self._call("GET", "/v1/pipelines")
        return found

    def _stream_events(
        self, job_id: str, last_event_id: str | None, read_timeout: float | None
    ) -> Generator[dict[str, Any] | None]:
        """Parsed events, with ``None`` for every other line so callers can check a clock."""
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        with self._http.stream(
            "GET", self.job_url(job_id, "events"),
            headers=self.events_headers(last_event_id), timeout=timeout,
        ) as response:
            if response.is_error:
                response.read()
                raise _error_from(response)
            _check_event_stream(response)
            parser = SSEParser()
            for line in response.iter_lines():
                yield parser.feed(line)

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Follow a job's events (SSE) until the stream ends, after its terminal event.

        Each event is ``{"id", "event", "data"}``. Without ``last_event_id`` the stream starts
        with the job's whole history; with it, with the events after that id.
        """
        for event in self._stream_events(job_id, last_event_id, SSE_READ_TIMEOUT):
            if event is not None:
                yield event

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_event: EventCallback | None = None,
    ) -> dict[str, Any]:
        """Block until the job ends and return it; ``TimeoutError`` after ``timeout`` seconds.

        Follows the job's events (``on_event`` sees each one), reconnects with
        ``Last-Event-ID`` when a stream breaks, and polls when SSE is unavailable.
        """
        plan = WaitPlan(timeout)
        while plan.follow:
            plan.stream_started()
            try:
                with contextlib.closing(
                    self._stream_events(job_id, plan.last_event_id, plan.read_timeout())
                ) as stream:
                    for event in stream:
                        plan.remaining()
                        if event is None:
                            continue
                        if on_event:
                            on_event(event)
                        if plan.saw(event):
                            break
                    else:
                        plan.stream_ended(failed=False)
            except (httpx.HTTPError, ClientError):
                plan.remaining()
                plan.stream_ended(failed=True)
        while True:
            job = self.get(job_id)
            if is_terminal_job(job):
                return job
            time.sleep(plan.next_delay())

    def download(self, job_id: str, name: str, dest: PathLike) -> Path:
        """Stream the artifact ``name`` to ``dest`` and return the written path.

        ``dest`` is a file path, or a directory (existing, or a string ending in ``/``) to put
        ``name`` in; missing parent directories are created. The bytes are checked against the
        server's sha256 ``ETag`` (``ClientError`` ``checksum_mismatch`` otherwise).
        """
        return self._download(self.job_url(job_id, "artifacts", name), dest, name)

    def download_input(self, job_id: str, dest: PathLike) -> Path:
        """Stream the job's uploaded file to ``dest``; a directory gets its original name."""
        return self._download(self.job_url(job_id, "input"), dest, f"{job_id}.input")

    def _download(self, url: str, dest: PathLike, fallback: str) -> Path:
        with self._http.stream("GET", url) as response:
            if response.is_error:
                response.read()
                raise _error_from(response)
            out = _Download(response, dest, fallback)
            try:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    out.write(chunk)
            except BaseException:
                out.abort()
                raise
            return out.finish()


class AsyncClient(BaseClient):
    """An asynchronous conveyor client (an async context manager over ``httpx.AsyncClient``).

    Same methods as :class:`Client`, as coroutines (``events`` and ``iter_jobs`` are async
    iterators).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, headers=headers, timeout=timeout)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.result(await self._http.request(method, url, **kwargs))

    async def submit(
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
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Upload the file at ``path`` (streamed from disk) and return the new job."""
        plan = self.plan_upload(
            path, pipeline=pipeline, options=options, webhook_url=webhook_url,
            priority=priority, max_attempts=max_attempts, timeout_s=timeout_s,
            idempotency_key=idempotency_key, filename=filename,
        )

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            if on_progress:
                on_progress(0, plan.size)
            src = await anyio.open_file(plan.path, "rb")
            try:
                while chunk := await src.read(CHUNK_SIZE):
                    yield chunk
                    sent += len(chunk)
                    if on_progress:
                        on_progress(sent, plan.size)
            finally:
                await src.aclose()

        job: dict[str, Any] = await self._call(
            "POST", plan.url, params=plan.params, headers=plan.headers, content=body()
        )
        return job

    async def get(self, job_id: str) -> dict[str, Any]:
        """The job ``job_id`` (ClientError ``not_found`` / ``gone`` otherwise)."""
        job: dict[str, Any] = await self._call("GET", self.job_url(job_id))
        return job

    async def list(
        self,
        state: str | None = None,
        pipeline: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of jobs, newest first: ``{"items": [...], "next_cursor": str | None}``."""
        page: dict[str, Any] = await self._call(
            "GET", "/v1/jobs", params=self.list_params(state, pipeline, limit, cursor)
        )
        return page

    async def iter_jobs(
        self, state: str | None = None, pipeline: str | None = None, limit: int = 50
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching job, newest first, following cursors."""
        cursor: str | None = None
        while True:
            page = await self.list(state=state, pipeline=pipeline, limit=limit, cursor=cursor)
            for job in page["items"]:
                yield job
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; returns it (``cancelled``, or still ``running`` while it stops)."""
        job: dict[str, Any] = await self._call("POST", self.job_url(job_id, "cancel"))
        return job

    async def retry(self, job_id: str) -> dict[str, Any]:
        """Queue a failed or cancelled job again; returns it."""
        job: dict[str, Any] = await self._call("POST", self.job_url(job_id, "retry"))
        return job

    async def delete(self, job_id: str) -> None:
        """Delete a job, its input and its artifacts."""
        await self._call("DELETE", self.job_url(job_id))

    async def pipelines(self) -> builtins.list[dict[str, Any]]:
        """The pipelines the server offers, with their options schemas."""
        found: builtins.list[dict[str, Any]] = await self._call("GET", "/v1/pipelines")
        return found

    async def _stream_events(
        self, job_id: str, last_event_id: str | None, read_timeout: float | None
    ) -> AsyncGenerator[dict[str, Any] | None]:
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        async with self._http.stream(
            "GET", self.job_url(job_id, "events"),
            headers=self.events_headers(last_event_id), timeout=timeout,
        ) as response:
            if response.is_error:
                await response.aread()
                raise _error_from(response)
            _check_event_stream(response)
            parser = SSEParser()
            async for line in response.aiter_lines():
                yield parser.feed(line)

    async def events(
        self, job_id: str, last_event_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Follow a job's events (SSE) until the stream ends, after its terminal event."""
        stream = self._stream_events(job_id, last_event_id, SSE_READ_TIMEOUT)
        try:
            async for event in stream:
                if event is not None:
                    yield event
        finally:
            await stream.aclose()

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_event: EventCallback | None = None,
    ) -> dict[str, Any]:
        """Wait until the job ends and return it; ``TimeoutError`` after ``timeout`` seconds."""
        plan = WaitPlan(timeout)
        while plan.follow:
            plan.stream_started()
            stream = self._stream_events(job_id, plan.last_event_id, plan.read_timeout())
            try:
                async for event in stream:
                    plan.remaining()
                    if event is None:
                        continue
                    if on_event:
                        on_event(event)
                    if plan.saw(event):
                        break
                else:
                    plan.stream_ended(failed=False)
            except (httpx.HTTPError, ClientError):
                plan.remaining()
                plan.stream_ended(failed=True)
            finally:
                with contextlib.suppress(httpx.HTTPError):
                    await stream.aclose()
        while True:
            job = await self.get(job_id)
            if is_terminal_job(job):
                return job
            await anyio.sleep(plan.next_delay())

    async def download(self, job_id: str, name: str, dest: PathLike) -> Path:
        """Stream the artifact ``name`` to ``dest`` (as :meth:`Client.download`)."""
        return await self._download(self.job_url(job_id, "artifacts", name), dest, name)

    async def download_input(self, job_id: str, dest: PathLike) -> Path:
        """Stream the job's uploaded file to ``dest``; a directory gets its original name."""
        return await self._download(self.job_url(job_id, "input"), dest, f"{job_id}.input")

    async def _download(self, url: str, dest: PathLike, fallback: str) -> Path:
        async with self._http.stream("GET", url) as response:
            if response.is_error:
                await response.aread()
                raise _error_from(response)
            out = await anyio.to_thread.run_sync(_Download, response, dest, fallback)
            try:
                async for chunk in response.aiter_bytes(CHUNK_SIZE):
                    out.write(chunk)
            except BaseException:
                out.abort()
                raise
            return await anyio.to_thread.run_sync(out.finish)
