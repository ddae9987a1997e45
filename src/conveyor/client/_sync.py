"""The synchronous client: :class:`Client` adds the I/O over ``httpx.Client``."""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import (
    Generator,
    Iterator,
    Mapping,
)
from pathlib import Path
from typing import Any, Self

import httpx

from conveyor.client._core import (
    CHUNK_SIZE,
    SSE_READ_TIMEOUT,
    BaseClient,
    EventCallback,
    PathLike,
    ProgressCallback,
    SSEParser,
    WaitPlan,
    _check_event_stream,
    _Download,
    _error_from,
    is_terminal_job,
)
from conveyor.client._tus import ResumableUpload, TusRequest, UploadStore
from conveyor.errors import ClientError


class Client(BaseClient):
    """A synchronous conveyor client (a context manager over ``httpx.Client``)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        """``api_key``: sent as ``Authorization: Bearer``; default ``$CONVEYOR_API_KEY``."""
        super().__init__(base_url, headers=headers, timeout=timeout, api_key=api_key)
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
        reuse: bool = False,
    ) -> dict[str, Any]:
        """Upload the file at ``path`` (streamed from disk) and return the new job.

        ``on_progress(bytes_sent, total)`` is called as chunks go out. With an
        ``idempotency_key`` seen before, the server returns the first job instead. With
        ``reuse``, a job made from the same bytes, pipeline, options and processor version is
        reused: the new job comes back already succeeded.
        """
        plan = self.plan_upload(
            path, pipeline=pipeline, options=options, webhook_url=webhook_url,
            priority=priority, max_attempts=max_attempts, timeout_s=timeout_s,
            idempotency_key=idempotency_key, filename=filename, reuse=reuse,
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

    def submit_resumable(
        self,
        path: PathLike,
        *,
        pipeline: str = "auto",
        options: Mapping[str, Any] | None = None,
        webhook_url: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        filename: str | None = None,
        chunk_size: int | None = None,
        store: UploadStore | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Upload the file at ``path`` over tus (``/v1/uploads``) and return the new job.

        Cut connections, server restarts, 5xx and 423/429 answers are retried from the
        server's offset (giving up after about a minute without progress). ``chunk_size``
        sends at most that many bytes per request (for proxies that cap bodies; default: the
        rest of the file). With a ``store`` (:class:`UploadStore`), an upload interrupted in
        an earlier run of the same file and parameters is resumed. The job's input must have
        the file's sha256, else the job is cancelled and ClientError ``checksum_mismatch``
        (or ``file_changed``) is raised. ``on_progress(position, total)`` follows the bytes
        going out; after a retry it starts again from the server's offset.
        """
        upload = ResumableUpload.for_job(
            self.base_url, path, pipeline=pipeline, options=options, webhook_url=webhook_url,
            priority=priority, max_attempts=max_attempts, timeout_s=timeout_s,
            filename=filename, chunk_size=chunk_size, store=store,
        )
        request: TusRequest | None = upload.first()
        while request is not None:
            if request.delay:
                time.sleep(request.delay)
            try:
                response = self._tus_send(upload, request, on_progress)
            except httpx.TransportError as exc:
                request = upload.failed(request, exc)
                continue
            request = upload.answer(request, response)
        assert upload.job_id is not None and upload.job is not None
        job = upload.job
        try:
            upload.check(job)
        except ClientError:
            with contextlib.suppress(ClientError, httpx.HTTPError):
                self.cancel(upload.job_id)
            raise
        return job

    def _tus_send(self, upload: ResumableUpload, request: TusRequest,
                  on_progress: ProgressCallback | None) -> httpx.Response:
        if request.method != "PATCH":
            return self._http.request(request.method, request.url, headers=request.headers)

        def body() -> Iterator[bytes]:
            position, end = request.offset, request.offset + request.length
            if on_progress:
                on_progress(position, upload.size)
            with upload.path.open("rb") as src:
                src.seek(position)
                while position < end:
                    chunk = src.read(min(CHUNK_SIZE, end - position))
                    if not chunk:
                        raise upload.shrunk()
                    upload.hash.feed(position, chunk)
                    yield chunk
                    position += len(chunk)
                    if on_progress:
                        on_progress(position, upload.size)

        return self._http.request("PATCH", request.url, headers=request.headers, content=body())

    def submit_url(
        self,
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
    ) -> dict[str, Any]:
        """Create a job whose input the server fetches from ``url`` (http or https); returns
        the job at once (``input.size`` and ``sha256`` are None until a worker fetched it).

        A URL the server refuses (a private address, another scheme) raises ClientError
        ``url_forbidden``; fetch failures end the job (``url_status``, ``url_unreachable``,
        ``url_forbidden``, ``too_large``).
        """
        body, headers = self.plan_url_import(
            url, pipeline=pipeline, options=options, webhook_url=webhook_url,
            priority=priority, max_attempts=max_attempts, timeout_s=timeout_s,
            idempotency_key=idempotency_key, filename=filename,
        )
        job: dict[str, Any] = self._call("POST", "/v1/jobs", json=body, headers=headers)
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
