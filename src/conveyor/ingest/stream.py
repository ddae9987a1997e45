"""The async driver: the request body goes once, chunk by chunk, into a storage writer.

python-multipart's parser is fed from ``request.stream()``; its (synchronous) callbacks gather
the file part's bytes of one request chunk while the sha256 and the size are computed and the
first bytes are kept for sniffing; the driver then awaits the writer with them, so a slow
disk or upload slows the reading of the request (back-pressure). No spooled temp file, no
second copy, no whole-body buffering. The caller opens the writer and completes or aborts it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from conveyor.errors import MalformedBody, NoFile, TooLarge
from conveyor.processors.sniff import SNIFF_BYTES
from conveyor.quotas.policy import Budget
from conveyor.storage import Writer

MAX_FIELDS = 1000
MAX_FIELD_BYTES = 64 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024

#: Called once with the text parts that came before the file part, as soon as the file part
#: begins; it raises to refuse the upload before the file's bytes are read. (Not earlier: a
#: body with no file part at all must still answer ``no_file``, whatever its text parts say.)
FieldCheck = Callable[[dict[str, str]], Awaitable[None]]


@dataclass(slots=True)
class Received:
    """The outcome of a streamed upload, before the job exists."""

    size: int = 0
    sha256: str = ""
    head: bytes = b""
    filename: str | bytes | None = None
    declared_type: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


class _Sink:
    def __init__(self, writer: Writer, limit: int, budget: Budget | None = None) -> None:
        self.writer = writer
        self.pending = bytearray()
        self.limit = limit
        self.budget = budget
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge(f"the upload is larger than {self.limit} bytes")
        if self.budget is not None and self.size > self.budget.size:
            # A tenant's byte quota crossed mid-stream: stop reading; the caller aborts.
            raise self.budget.refuse()
        if len(self.head) < SNIFF_BYTES:
            self.head += data[: SNIFF_BYTES - len(self.head)]
        self.digest.update(data)
        self.pending += data

    async def flush(self) -> None:
        if self.pending:
            # Handed over, not copied: the sink starts a new buffer (a copy of every byte on
            # the event loop cost more than hashing it).
            data, self.pending = self.pending, bytearray()
            await self.writer.write(data)


async def receive_raw(stream: AsyncIterator[bytes], writer: Writer, limit: int,
                      budget: Budget | None = None) -> Received:
    """Write a raw body (the file itself) into ``writer``, hashing and counting it; past
    ``limit`` bytes it raises TooLarge, past ``budget`` (a tenant's quota) its refusal."""
    sink = _Sink(writer, limit, budget)
    async for chunk in stream:
        if chunk:
            sink.write(chunk)
            await sink.flush()
    return Received(size=sink.size, sha256=sink.digest.hexdigest(),
                    head=bytes(sink.head))


class _MultipartState:
    """Callbacks for python-multipart: what part we are in and where its bytes go."""

    def __init__(self, writer: Writer, limit: int, budget: Budget | None) -> None:
        self.sink = _Sink(writer, limit, budget)
        self.fields: dict[str, str] = {}
        self.parts = 0
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.header_bytes = 0
        self.current: str | None = None  # "file", "field" or "skip"
        self.field_name = ""
        self.field_value = bytearray()
        self.file_seen = False
        self.file_done = False
        self.filename: str | bytes | None = None
        self.declared_type: str | None = None
        self.ended = False
        self.check_due = False

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_FIELDS:
            raise MalformedBody(f"more than {MAX_FIELDS} parts", code="too_many_fields")
        self.headers = {}
        self.header_bytes = 0
        self.current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.header_value += data[start:end]

    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_PART_HEADER_BYTES:
            raise MalformedBody("a part's headers are too large")

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition = self.headers.get(b"content-disposition")
        if disposition is None:
            raise MalformedBody("a part has no Content-Disposition header")
        _kind, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            if name != "file":
                raise MalformedBody(f"unexpected file part {name!r}")
            if self.file_seen:
                raise MalformedBody("only one file part is accepted", code="too_many_files")
            self.file_seen = True
            self.check_due = True
            self.filename = options[b"filename"]
            ctype = self.headers.get(b"content-type")
            self.declared_type = ctype.decode("latin-1").strip()[:200] if ctype else None
            self.current = "file"
        else:
            if name == "file":
                raise MalformedBody("the `file` part has no filename")
            self.current = "field"
            self.field_name = name
            self.field_value = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current == "file":
            self.sink.write(memoryview(data)[start:end])
        elif self.current == "field":
            self.field_value += data[start:end]
            if len(self.field_value) > MAX_FIELD_BYTES:
                raise MalformedBody(f"field {self.field_name!r} is over {MAX_FIELD_BYTES} bytes",
                                    code="field_too_large")

    def on_part_end(self) -> None:
        if self.current == "file":
            self.file_done = True
        elif self.current == "field":
            if self.field_name in self.fields:
                raise MalformedBody(f"field {self.field_name!r} given twice")
            self.fields[self.field_name] = self.field_value.decode("utf-8", "replace")
        self.current = None

    def on_end(self) -> None:
        self.ended = True


async def receive_multipart(
    stream: AsyncIterator[bytes], content_type: str, writer: Writer, limit: int,
    check: FieldCheck | None = None, budget: Budget | None = None,
) -> Received:
    """Parse a multipart body, the file part into ``temp``; ``check`` sees text parts early."""
    _ctype, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise MalformedBody("multipart/form-data needs a boundary (<= 200 bytes)")
    state = _MultipartState(writer, limit, budget)
    callbacks = {
        "on_part_begin": state.on_part_begin,
        "on_part_data": state.on_part_data,
        "on_part_end": state.on_part_end,
        "on_header_field": state.on_header_field,
        "on_header_value": state.on_header_value,
        "on_header_end": state.on_header_end,
        "on_headers_finished": state.on_headers_finished,
        "on_end": state.on_end,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in stream:
            if chunk:
                parser.write(chunk)
                if state.check_due and check is not None:
                    state.check_due = False
                    await check(dict(state.fields))
                await state.sink.flush()
        parser.finalize()
        await state.sink.flush()
    except MultipartParseError as exc:
        raise MalformedBody(f"malformed multipart body: {exc}") from None
    if not state.ended:
        raise MalformedBody("the multipart body ended before its closing boundary")
    if not state.file_done:
        raise NoFile("the multipart body has no file part named `file`")
    return Received(
        size=state.sink.size,
        sha256=state.sink.digest.hexdigest(),
        head=bytes(state.sink.head),
        filename=state.filename,
        declared_type=state.declared_type,
        fields=state.fields,
    )
