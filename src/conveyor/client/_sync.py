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
