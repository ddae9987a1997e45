"""uvicorn's httptools protocol, with the limits a request head must keep and problem+json
answers for the requests it refuses before the application sees them.

- a time-out for the request head (408), a cap on its size and on the number of headers
  (431), and a cap on concurrent connections per client address (503): uvicorn enforces none
  of these with httptools (its ``h11_max_incomplete_event_size`` applies only to h11);
- the parser's own 400s (a malformed request line or header, a bad Content-Length or chunk
  size, an unknown method) as ``application/problem+json`` with code ``bad_request``;
- a :class:`ConnectionControl` in each request's scope (``scope["extensions"][CONNECTION]``),
  through which a long response (an event stream) can bound its socket's send buffer and drop
  a reader that stopped reading.

Every refusal closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from conveyor.problems import PROBLEM

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


def problem_body(status: int, code: str, detail: str) -> bytes:
    return json.dumps({"type": f"https://conveyor.dev/problems/{code}",
                       "title": _REASONS.get(status, "Error"), "status": status,
                       "detail": detail, "code": code}).encode()


def raw_problem(status: int, code: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response, for refusals made before the app sees the request."""
    body = problem_body(status, code, detail)
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: {PROBLEM}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


#: The scope extension holding ``{"control": ConnectionControl}``.
CONNECTION = "conveyor.connection"


class ConnectionControl:
    """What a response may do to its own connection, beyond ASGI."""

    def __init__(self, transport: asyncio.Transport, protocol: HttpToolsProtocol | None = None
                 ) -> None:
        self._transport = transport
        self._protocol = protocol

    @property
    def chunked(self) -> bool:
        """Whether the response under way is sent with chunked transfer coding."""
        cycle = getattr(self._protocol, "cycle", None)
        return bool(getattr(cycle, "chunked_encoding", False))

    def write(self, data: bytes) -> None:
        """Append already framed body bytes to the connection, bypassing ASGI.

        For a response that has started and sends more body: an event stream's live phase,
        where one encoded frame is written to every subscriber's socket
        (:mod:`conveyor.api.subscriber`). The bytes follow whatever ASGI sent before.
        """
        if not self._transport.is_closing():
            self._transport.write(data)

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self._transport.get_write_buffer_size()

    def closing(self) -> bool:
        return self._transport.is_closing()

    def abort(self) -> None:
        """Close at once with a reset, dropping unsent bytes: ``close()`` would wait for a
        stalled reader to take them, and even a closed socket's kernel buffer lingers until
        the peer reads it, unless the close resets the connection (SO_LINGER 0)."""
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    def limit_send_buffer(self, size: int) -> None:
        """Cap the kernel's send buffer of this socket (no autotuning up to megabytes)."""
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def connection_control(scope: Mapping[str, Any]) -> ConnectionControl | None:
    """The request's :class:`ConnectionControl`, when served by :func:`protocol_class`."""
    control = scope.get("extensions", {}).get(CONNECTION, {}).get("control")
    return control if isinstance(control, ConnectionControl) else None


@dataclass(frozen=True, slots=True)
class HeadLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_connections_per_client: int = 1024


def protocol_class(limits: HeadLimits) -> type[HttpToolsProtocol]:
    """The protocol for ``uvicorn.run(http=...)``, enforcing ``limits`` on every request."""
    per_client: Counter[str] = Counter()

    class Guarded(HttpToolsProtocol):
        _in_head = True
        _head_bytes = 0  # raw bytes of an unfinished head
        _head_size = 0  # parsed URL and header bytes
        _headers = 0
        _refused: bytes | None = None
        _head_timer: asyncio.TimerHandle | None = None
        _peer: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._peer = self.client[0] if self.client else None
            if self._peer is not None:
                per_client[self._peer] += 1
                if per_client[self._peer] > limits.max_connections_per_client:
                    self._refuse(raw_problem(503, "too_many_connections",
                                             "too many concurrent connections from this address"))
                    return
            self._start_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            if self._peer is not None:
                per_client[self._peer] -= 1
                if per_client[self._peer] <= 0:
                    del per_client[self._peer]
                self._peer = None
            super().connection_lost(exc)

        def _start_head(self) -> None:
            self._in_head, self._head_bytes, self._head_size, self._headers = True, 0, 0, 0
            self._stop_timer()
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_timeout)

        def _stop_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self._refuse(raw_problem(408, "request_timeout",
                                         "the request head did not arrive in time"))

        def _refuse(self, response: bytes) -> None:
            self._stop_timer()
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            self._refuse(raw_problem(400, "bad_request", msg))

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            counting = self._in_head
            super().data_received(data)
            if self._refused is not None:
                self._refuse(self._refused)
            elif counting and self._in_head:
                # The parser buffers an unfinished header line whole: count the raw bytes of
                # a head that is still incomplete after this chunk.
                self._head_bytes += len(data)
                if self._head_bytes > limits.max_header_bytes:
                    self._refuse(self._too_large())

        def _too_large(self) -> bytes:
            return raw_problem(431, "headers_too_large",
                               f"the request head is over {limits.max_header_bytes} bytes or "
                               f"{limits.max_headers} headers")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["extensions"] = {CONNECTION: {
                "control": ConnectionControl(self.transport, self)}}

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._count(len(url))

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self._headers += 1
            self._count(len(name) + len(value) + 4)

        def _count(self, n: int) -> None:
            self._head_size += n
            if self._head_size > limits.max_header_bytes or self._headers > limits.max_headers:
                self._refused = self._too_large()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._stop_timer()
            if self._refused is None:
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if self._refused is None:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused is None:
                super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._start_head()

    return Guarded
