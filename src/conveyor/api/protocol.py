"""uvicorn's HTTP/1.1 protocol with its own error answers as problem+json.

Requests that the HTTP parser refuses (a malformed request line or header, a bad
Content-Length or chunk size, an unknown method, a request line or header block over the
parser's limit) never reach the application: uvicorn answers them itself with a ``text/plain``
400. These subclasses send the same 400 as ``application/problem+json`` with code
``bad_request``; the connection is closed afterwards as before.
"""

from __future__ import annotations

import asyncio
import json

from conveyor.problems import PROBLEM

_STATUS_LINE = b"HTTP/1.1 400 Bad Request\r\n"


def problem_body(message: str) -> bytes:
    """The 400 problem+json body for a request the parser refused."""
    return json.dumps(
        {"type": "https://conveyor.dev/problems/bad_request", "title": "Bad Request",
         "status": 400, "detail": message, "code": "bad_request"},
        separators=(",", ":"),
    ).encode()


def protocol_class() -> type[asyncio.Protocol] | str:
    """The protocol for ``uvicorn.run(http=...)``: httptools with problem+json 400s if present."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools missing: uvicorn's h11 protocol, whose 400 stays text/plain
        return "auto"

    class ProblemHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            body = problem_body(msg)
            content = [_STATUS_LINE]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend([
                b"content-type: " + PROBLEM.encode() + b"\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ])
            self.transport.write(b"".join(content))
            self.transport.close()

    return ProblemHttpToolsProtocol
