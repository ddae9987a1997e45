"""The asynchronous client: :class:`AsyncClient` adds the I/O over ``httpx.AsyncClient``."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Mapping,
)
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
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
        api_key: str | None = None,
    ) -> None:
        """``api_key``: sent as ``Authorization: Bearer``; default ``$CONVEYOR_API_KEY``."""
        super().__init__(base_url, headers=headers, timeout=timeout, api_key=api_key)
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
        reuse: bool = False,
    ) -> dict[str, Any]:
        """Upload the file at ``path`` (streamed from disk) and return the new job."""
        plan = self.plan_upload(
            path, pipeline=pipeline, options=options, webhook_url=webhook_url,
            priority=priority, max_attempts=max_attempts, timeout_s=timeout_s,
            idempotency_key=idempotency_key, filename=filename, reuse=reuse,
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

    async def submit_resumable(
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
        """Upload the file at ``path`` over tus and return the new job (as
        :meth:`Client.submit_resumable`)."""
        upload = ResumableUpload.for_job(
            self.base_url, path, pipeline=pipeline, options=options, webhook_url=webhook_url,
            priority=priority, max_attempts=max_attempts, timeout_s=timeout_s,
            filename=filename, chunk_size=chunk_size, store=store,
        )
        request: TusRequest | None = upload.first()
        while request is not None:
            if request.delay:
                await anyio.sleep(request.delay)
            try:
                response = await self._tus_send(upload, request, on_progress)
            except httpx.TransportError as exc:
                request = upload.failed(request, exc)
                continue
            request = upload.answer(request, response)
        assert upload.job_id is not None and upload.job is not None
        job = upload.job
        try:
            await anyio.to_thread.run_sync(upload.check, job)
        except ClientError:
            with contextlib.suppress(ClientError, httpx.HTTPError):
                await self.cancel(upload.job_id)
            raise
        return job

    async def _tus_send(self, upload: ResumableUpload, request: TusRequest,
                        on_progress: ProgressCallback | None) -> httpx.Response:
        if request.method != "PATCH":
            return await self._http.request(request.method, request.url,
                                            headers=request.headers)

        async def body() -> AsyncIterator[bytes]:
            position, end = request.offset, request.offset + request.length
            if on_progress:
                on_progress(position, upload.size)
            src = await anyio.open_file(upload.path, "rb")
            try:
                await src.seek(position)
                while position < end:
                    chunk = await src.read(min(CHUNK_SIZE, end - position))
                    if not chunk:
                        raise upload.shrunk()
                    upload.hash.feed(position, chunk)
                    yield chunk
                    position += len(chunk)
                    if on_progress:
                        on_progress(position, upload.size)
            finally:
                await src.aclose()

        return await self._http.request("PATCH", request.url, headers=request.headers,
                                        content=body())

    async def submit_url(
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
        job: dict[str, Any] = await self._call("POST", "/v1/jobs", json=body, headers=headers)
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
