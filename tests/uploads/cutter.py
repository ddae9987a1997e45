"""A small TCP relay that cuts connections: the ``n``-th connection is dropped after its
client has sent ``cuts[n]`` bytes (later connections pass whole). Runs its own asyncio loop
in a thread; loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Cutter:
    def __init__(self, upstream_port: int, cuts: list[int]) -> None:
        self.upstream_port = upstream_port
        self.cuts = list(cuts)
        self.connections = 0
        self.cut = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def __enter__(self) -> Cutter:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        limit = self.cuts[index] if index < len(self.cuts) else None
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.append(up_writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       budget: int | None) -> None:
            sent = 0
            while True:
                data = await src.read(64 * 1024)
                if not data:
                    break
                if budget is not None and sent + len(data) >= budget:
                    dst.write(data[: budget - sent])
                    await dst.drain()
                    self.cut += 1
                    raise ConnectionAbortedError
                sent += len(data)
                dst.write(data)
                await dst.drain()

        tasks = [asyncio.ensure_future(pump(reader, up_writer, limit)),
                 asyncio.ensure_future(pump(up_reader, writer, None))]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.transport.abort()
