"""The worker's bridge to the async storage protocol.

Worker processes are synchronous and run one job at a time, so each storage call simply runs
to completion on a private event loop. That loop's executor runs ``asyncio.to_thread`` work
inline: a blocking worker gains nothing from a thread hop, and jobs stay as cheap as before.
The exception is :meth:`BlockingStorage.put_many`, a job's outputs stored at once on threads,
so that their fsyncs overlap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from conveyor.storage.base import Immediate, ObjectInfo, Storage

T = TypeVar("T")

#: Threads of one :meth:`BlockingStorage.put_many`.
MAX_PUTS = 4


class _Inline(ThreadPoolExecutor):
    """Runs each submitted call at once in the calling thread (asyncio wants this base class)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class BlockingStorage:
    """The same storage, one blocking call per operation (for synchronous processes)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._now = storage if isinstance(storage, Immediate) else None
        self._loop = asyncio.new_event_loop()
        self._inline = _Inline(max_workers=1)
        self._loop.set_default_executor(self._inline)

    def run(self, aw: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await aw

        return self._loop.run_until_complete(wrap())

    def get_to_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        self.run(self.storage.get_to_file(key, path, sha256))

    def put_from_file(self, path: Path, key: str) -> None:
        self.run(self.storage.put_from_file(path, key))

    def put_many(self, files: list[tuple[Path, str]]) -> None:
        """Store several files (``(path, key)`` pairs) at once, each as :meth:`put_from_file`.

        Their fsyncs overlap, and on local storage the renames into one directory share its
        fsync. Every put has ended, stored or failed, when this returns or raises (the first
        failure).
        """
        if len(files) < 2:
            for path, key in files:
                self.put_from_file(path, key)
            return

        async def put_all() -> list[BaseException | None]:
            return await asyncio.gather(
                *(self.storage.put_from_file(path, key) for path, key in files),
                return_exceptions=True)

        pool = ThreadPoolExecutor(min(len(files), MAX_PUTS), thread_name_prefix="conveyor-put")
        self._loop.set_default_executor(pool)
        try:
            outcomes = self.run(put_all())
        finally:
            self._loop.set_default_executor(self._inline)
            pool.shutdown()
        for outcome in outcomes:
            if outcome is not None:
                raise outcome

    def put_bytes(self, key: str, data: bytes) -> None:
        async def put() -> None:
            writer = await self.storage.open_writer(key)
            try:
                await writer.write(data)
                await writer.complete()
            except BaseException:
                await writer.abort()
                raise

        self.run(put())

    def read_bytes(self, key: str) -> bytes:
        async def read() -> bytes:
            return b"".join([chunk async for chunk in await self.storage.read(key)])

        return self.run(read())

    def stat(self, key: str) -> ObjectInfo | None:
        if self._now is not None:
            return self._now.stat_now(key)
        return self.run(self.storage.stat(key))

    def keys(self, prefix: str) -> list[str]:
        if self._now is not None:
            return self._now.keys_now(prefix)
        return self.run(self.storage.keys(prefix))

    def delete(self, key: str) -> None:
        self.run(self.storage.delete(key))

    def delete_prefix(self, prefix: str) -> None:
        self.run(self.storage.delete_prefix(prefix))

    def close(self) -> None:
        self._loop.close()
